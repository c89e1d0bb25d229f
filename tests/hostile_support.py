"""Assertions shared by the hostile-input test modules: one line and exit 1 from the `pi0viz` command, and
nothing lost or left behind (no temporaries, whole JPEGs)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from render_support import decode

from pi0viz.cli import main


def one_line_error(*args: object) -> str:
    """Run `pi0viz ARGS` in-process; assert exit 1, no traceback and exactly one error line on stderr (demo and
    serve may print progress lines before it); return that line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output!r} {result.exception!r}"
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def assert_no_temporaries(root: Path) -> None:
    leftovers = [p for p in files_under(root) if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def assert_whole_jpegs(root: Path) -> int:
    """Every JPEG under root decodes completely (an independent decoder); returns how many there are."""
    paths = [p for p in files_under(root) if p.suffix == ".jpg"]
    for p in paths:
        assert decode(p).size > 0, p
    return len(paths)
