"""The viewer's "knockouts" panel: `pi0viz knockout` results found in the run folder (knockouts.json: key sets on
one observation; knockout.json: deletion / insertion curves) -> tables of text cells and their figure.

Every cell is formatted here from checked numbers and strings; the page writes them with textContent only. The
figure (knockouts.png / knockout.png next to the JSON) is embedded as a data: URL, so the page stays one offline
file. A file that cannot be used becomes one line saying so, never an error: the rest of the page is unaffected.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

from pi0viz.core.runs import KNOCKOUT_FILES

MAX_JSON_BYTES = 16 << 20  # a knockouts.json is kilobytes
MAX_PNG_BYTES = 4 << 20  # a knockouts.png is ~100 KB
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STUDY_HEADER = ["removed", "method", "where", "k", "action shift", "random, same k", "ratio"]
CURVES_HEADER = ["rank", "map", "deletion gap (faithfulness)", "insertion gap", "deletion area", "insertion area"]


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _mean_se(block: Any) -> tuple[float, float] | None:
    if not isinstance(block, dict):
        return None
    m, s = _number(block.get("mean")), _number(block.get("se"))
    return None if m is None or s is None else (m, s)


def _pm(pair: tuple[float, float] | None, digits: int = 4) -> str:
    return "-" if pair is None else f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def condition_row(c: dict[str, Any]) -> list[str] | None:
    """The cells of one condition of a knockouts.json (STUDY_HEADER), or None when it has no action shift."""
    shift = _mean_se(c.get("mean_abs_delta"))
    if shift is None:
        return None
    method = "pixels" if c.get("method") == "pixels" else "keys"
    where = "pixel replacement" if method == "pixels" else str(c.get("route", ""))
    layer = c.get("layer")
    if isinstance(layer, int) and not isinstance(layer, bool):
        where += f", layer {layer}"
    k = c.get("k")
    ratio = _number(c.get("ratio"))
    return [str(c.get("set", "")), method, where,
            str(k) if isinstance(k, int) and not isinstance(k, bool) else "", _pm(shift),
            _pm(_mean_se(c.get("random"))), "-" if ratio is None else f"{ratio:.1f}×"]


def _figure(path: Path) -> str | None:
    try:
        if path.is_file() and path.stat().st_size <= MAX_PNG_BYTES:
            raw = path.read_bytes()
            if raw.startswith(_PNG_MAGIC):
                return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    except OSError:
        pass
    return None


def knockout_panel(path: str | os.PathLike, root: str | os.PathLike) -> dict[str, Any]:
    """One knockouts.json / knockout.json as the page's JSON: title (its folder relative to `root`), kind
    ("conditions" | "curves" | "unreadable"), info lines, header, rows of text cells, figure (data URL or None)."""
    path, root = Path(path), Path(root)
    try:
        title = path.parent.relative_to(root).as_posix() if path.parent != root else root.name
    except ValueError:
        title = path.parent.name
    title = f"{title}/{path.name}"
    fmt = KNOCKOUT_FILES.get(path.name)
    try:
        data = None if path.stat().st_size > MAX_JSON_BYTES else json.loads(
            path.read_text(encoding="utf-8"), parse_constant=lambda c: None)
    except (OSError, ValueError, RecursionError):
        data = None
    out: dict[str, Any] = {"title": title, "kind": "unreadable", "info": [], "header": [], "rows": [], "figure": None}
    if not isinstance(data, dict) or data.get("format") != fmt:
        out["info"] = [f"{path.name}: not a readable {fmt} file"]
        return out
    keys = ("policy", "observation", "prompt", "camera", "noise_draws", "random_draws", "examples", "measure")
    out["info"] = [f"{k}: {data[k]}" for k in keys
                   if isinstance(data.get(k), (str, int)) and not isinstance(data.get(k), bool)]
    if path.name == "knockouts.json":
        conds = data.get("conditions") if isinstance(data.get("conditions"), list) else []
        rows = [condition_row(c) for c in conds if isinstance(c, dict)]
        out.update(kind="conditions", header=STUDY_HEADER, rows=[r for r in rows if r is not None],
                   figure=_figure(path.with_name("knockouts.png")))
        return out
    maps = data.get("maps") if isinstance(data.get("maps"), dict) else {}
    ranked = []
    for name, entry in maps.items():
        cells = [_mean_se(entry.get(k)) if isinstance(entry, dict) else None
                 for k in ("deletion_gap", "insertion_gap", "deletion_area", "insertion_area")]
        if cells[0] is not None:
            ranked.append((-cells[0][0], str(name), cells))
    ranked.sort(key=lambda r: r[0])
    out.update(kind="curves", header=CURVES_HEADER,
               rows=[[str(i + 1), name, *(_pm(c, 3) for c in cells)] for i, (_, name, cells) in enumerate(ranked)],
               figure=_figure(path.with_name("knockout.png")))
    return out
