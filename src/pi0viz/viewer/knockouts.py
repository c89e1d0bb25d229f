"""The viewer's "knockouts" panel: `pi0viz knockout` results found in the run folder (knockouts.json: key sets on
one observation; knockout.json: deletion / insertion curves) -> the page's JSON.

The tables are `pi0viz.core.knockout_files`' text cells, the same ones `pi0viz report` shows; the page writes them
with textContent only. The figure is embedded as a data: URL, so the page stays one offline file. A file that cannot
be used becomes one line saying so, never an error: the rest of the page is unaffected.
"""

from __future__ import annotations

import os
from typing import Any

from pi0viz.core.knockout_files import (CURVES_HEADER, STUDY_HEADER, condition_row, png_data_url,
                                        read_knockout_result)

__all__ = ["CURVES_HEADER", "STUDY_HEADER", "condition_row", "knockout_panel"]


def knockout_panel(path: str | os.PathLike, root: str | os.PathLike) -> dict[str, Any]:
    """One knockouts.json / knockout.json as the page's JSON: title (its folder relative to `root`, then its name),
    kind ("conditions" | "curves" | "unreadable"), info lines, header, rows of text cells, figure (a PNG data URL or
    None)."""
    t = read_knockout_result(path, root)
    return {"title": t.title, "kind": t.kind, "info": t.info, "header": t.header, "rows": t.rows,
            "figure": png_data_url(t.figure)}
