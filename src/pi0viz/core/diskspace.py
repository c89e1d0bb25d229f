"""The disk guard shared by every writer of many files over time (`pi0viz sweep`, `pi0viz serve --record`): is
there room for what comes next, and the one-line refusal when there is not.

Estimates are the callers' (upper bounds from shapes); this module only compares them with the free space of the
file system that will hold them, with `HEADROOM`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pi0viz.errors import DiskSpaceError

JPEG_BYTES_PER_FILE = 10_300  # 370 MB / 36,000 files (README speed table, quality 85)
HEADROOM = 1.1  # refuse unless 10 % more than the estimate is free


def check_free(path: str | os.PathLike, need: int, *, what: str,
               hint: str = "fewer episodes, no JPEG trees, --steps/--layers selections") -> int:
    """Raise DiskSpaceError unless the file system of `path` has HEADROOM x `need` bytes free. Returns free bytes.

    `what` names the writer in the message ("this sweep"); `hint` names the options that write less.
    """
    probe = Path(path).resolve()
    while not probe.exists():  # the output folder may not exist yet: ask its nearest existing parent
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need * HEADROOM:
        raise DiskSpaceError(f"{what} needs about {format_bytes(need)} but only {format_bytes(free)} is free at "
                             f"{probe}; free space, choose another output folder, or write less ({hint})")
    return free


def format_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
