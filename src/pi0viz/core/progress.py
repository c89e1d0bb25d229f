"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, *, unit: str = "file", disable: bool = False) -> tqdm:
    """A tqdm bar on stderr: redrawn smoothly on a terminal, every 10 s in a log (CI, pipes), so logs stay short."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, desc=desc, disable=disable, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else 10.0, leave=True)
