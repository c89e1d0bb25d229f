"""Running a script that writes pi0viz outputs under several umasks, and checking the modes it reports.

The script gets `argv = [umask (octal), out folder, tests folder]`, sets the umask, writes into the out folder and
prints, as its last line, JSON {relative path: [is_dir, mode]} of everything under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

UMASKS = (0o022, 0o077, 0o002)  # 002: neither mkstemp's 0600 nor a hard-coded 0644 would pass


def modes_under_umasks(script_text: str, tmp_path: Path) -> dict[int, dict[str, tuple[bool, int]]]:
    """Run the script once per umask in UMASKS (concurrently); per umask, {path: (is_dir, mode)} it reported."""
    script = tmp_path / "modes.py"
    script.write_text(script_text)
    runs = {}
    for mask in UMASKS:
        out = tmp_path / f"umask_{mask:03o}"
        out.mkdir()
        runs[mask] = subprocess.Popen([sys.executable, str(script), f"{mask:o}", str(out), str(Path(__file__).parent)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = {}
    for mask, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        result[mask] = {name: (bool(d), int(m)) for name, (d, m) in json.loads(stdout.strip().splitlines()[-1]).items()}
    return result


def assert_umask_modes(mask: int, modes: dict[str, tuple[bool, int]]) -> None:
    """No temporary was left, and every file is 0o666 & ~mask, every folder 0o777 & ~mask (what open/mkdir give)."""
    assert not [n for n in modes if Path(n).name.startswith(".")], "a temporary was left"
    wrong = {n: f"{m:03o}" for n, (is_dir, m) in modes.items() if m != (0o777 if is_dir else 0o666) & ~mask}
    assert not wrong, f"umask {mask:03o}: {wrong}"
