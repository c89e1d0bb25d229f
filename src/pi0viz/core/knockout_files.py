"""A `pi0viz knockout` result file as plain text tables, the one presentation the report (escaped HTML) and the
viewer's knockouts panel (textContent) both show: knockouts.json (key sets removed on one observation, STUDY_FORMAT)
and knockout.json (deletion / insertion curves, KNOCKOUT_FORMAT).

Every cell is text formatted here once from checked finite numbers and strings ("0.0500 ± 0.0020"; "–" where a number
is missing). A file that cannot be used (unreadable, too large, NaN or Infinity, another format) is one info line of
kind "unreadable", never an error: the rest of a page is unaffected.
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pi0viz.core.jsonfile import read_json
from pi0viz.core.runs import KNOCKOUT_FILES
from pi0viz.errors import JsonFileError

STUDY_JSON = "knockouts.json"  # `pi0viz knockout --remove ...` (pi0viz.causal.study)
KNOCKOUT_JSON = "knockout.json"  # `pi0viz knockout` curves (pi0viz.causal.cli)
STUDY_FORMAT = KNOCKOUT_FILES[STUDY_JSON]
KNOCKOUT_FORMAT = KNOCKOUT_FILES[KNOCKOUT_JSON]
FIGURES = {STUDY_JSON: "knockouts.png", KNOCKOUT_JSON: "knockout.png"}  # written beside each JSON
MAX_JSON_BYTES = 16 << 20  # a knockout result is kilobytes
MAX_FIGURE_BYTES = 4 << 20  # its figure ~20-100 KB
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STUDY_HEADER = ["removed", "method", "where", "k", "action shift", "random, same k", "ratio"]
CURVES_HEADER = ["rank", "map", "deletion gap (faithfulness)", "insertion gap", "deletion area", "insertion area"]
INFO_KEYS = ("policy", "observation", "prompt", "camera", "noise_draws", "random_draws", "examples", "measure")
MISSING = "–"  # a cell whose number is absent or not finite
_CURVE_KEYS = ("deletion_gap", "insertion_gap", "deletion_area", "insertion_area")


@dataclass(frozen=True)
class KnockoutTable:
    """One knockout result file as text.

    Attributes:
        title: the file's folder relative to the page's root, then its name ("knockouts/knockouts.json").
        kind: "conditions" (knockouts.json), "curves" (knockout.json) or "unreadable".
        info: lines "key: value" of what was measured; for an unreadable file, the one line saying so.
        header: the column names (STUDY_HEADER or CURVES_HEADER; empty when unreadable).
        rows: one list of text cells per row, as many as `header`.
        text_columns: the columns holding words rather than numbers (drawn left-aligned).
        figure: the PNG beside the file (knockouts.png / knockout.png) when it exists, else None; embed it with
            `png_data_url`, which checks it.
    """

    title: str
    kind: str
    info: list[str]
    header: list[str]
    rows: list[list[str]]
    text_columns: tuple[int, ...]
    figure: Path | None


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        value = float(x)
    except OverflowError:  # an integer beyond float range
        return None
    return value if math.isfinite(value) else None


def _mean_se(block: Any) -> tuple[float, float] | None:
    """(mean, se) of a {"mean", "se"} block of finite numbers, else None."""
    if not isinstance(block, dict):
        return None
    m, s = _number(block.get("mean")), _number(block.get("se"))
    return None if m is None or s is None else (m, s)


def _pm(pair: tuple[float, float] | None, digits: int) -> str:
    return MISSING if pair is None else f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def condition_row(c: dict[str, Any]) -> list[str] | None:
    """The cells of one condition of a knockouts.json (STUDY_HEADER: action shift and its random baseline as
    mean ± se to 4 decimals, ratio to 1), or None when it has no usable action shift."""
    shift = _mean_se(c.get("mean_abs_delta"))
    if shift is None:
        return None
    method = "pixels" if c.get("method") == "pixels" else "keys"
    where = "pixel replacement" if method == "pixels" else str(c.get("route", ""))
    layer, k, ratio = _int(c.get("layer")), _int(c.get("k")), _number(c.get("ratio"))
    if layer is not None:
        where += f", layer {layer}"
    return [str(c.get("set", "")), method, where, "" if k is None else str(k), _pm(shift, 4),
            _pm(_mean_se(c.get("random")), 4), MISSING if ratio is None else f"{ratio:.1f}×"]


def _curve_rows(data: dict[str, Any]) -> list[list[str]]:
    """knockout.json's maps ranked by deletion gap (largest first; CURVES_HEADER, mean ± se to 3 decimals), then a
    "random order" row of the random order's areas when the file has them."""
    ranked = []
    for name, entry in data["maps"].items():
        cells = [_mean_se(entry.get(k)) if isinstance(entry, dict) else None for k in _CURVE_KEYS]
        if cells[0] is not None:
            ranked.append((-cells[0][0], str(name), cells))
    ranked.sort(key=lambda r: r[0])
    rows = [[str(i + 1), name, *(_pm(c, 3) for c in cells)] for i, (_, name, cells) in enumerate(ranked)]
    rand = data.get("random") if isinstance(data.get("random"), dict) else {}
    areas = [_mean_se(rand.get(k)) for k in ("deletion_area", "insertion_area")]
    if any(a is not None for a in areas):
        rows.append(["", "random order", "", "", *(_pm(a, 3) for a in areas)])
    return rows


def read_knockout_result(path: str | os.PathLike, root: str | os.PathLike) -> KnockoutTable:
    """A knockouts.json / knockout.json as text cells; `root` is the folder the title is relative to (a file outside
    it is titled by its own folder's name)."""
    path, root = Path(path), Path(root)
    try:
        folder = path.parent.relative_to(root).as_posix() if path.parent != root else root.name
    except ValueError:
        folder = path.parent.name
    title = f"{folder}/{path.name}"
    fmt = KNOCKOUT_FILES.get(path.name)
    try:
        data = read_json(path, max_bytes=MAX_JSON_BYTES, fmt=fmt) if fmt else None
    except JsonFileError:
        data = None
    body_key = "conditions" if path.name == STUDY_JSON else "maps"
    if data is None or not isinstance(data.get(body_key), list if body_key == "conditions" else dict):
        what = f"a readable {fmt} file" if fmt else f"a knockout result ({', '.join(KNOCKOUT_FILES)})"
        return KnockoutTable(title, "unreadable", [f"{path.name}: not {what}"], [], [], (), None)
    info = [f"{k}: {data[k]}" for k in INFO_KEYS if isinstance(data.get(k), str) or _int(data.get(k)) is not None]
    png = path.with_name(FIGURES[path.name])
    figure = png if png.is_file() else None
    if body_key == "conditions":
        rows = [condition_row(c) for c in data["conditions"] if isinstance(c, dict)]
        return KnockoutTable(title, "conditions", info, list(STUDY_HEADER), [r for r in rows if r is not None],
                             (0, 1, 2), figure)
    return KnockoutTable(title, "curves", info, list(CURVES_HEADER), _curve_rows(data), (1,), figure)


def png_data_url(path: Path | None, max_bytes: int = MAX_FIGURE_BYTES) -> str | None:
    """`data:image/png;base64,...` of a PNG file of at most `max_bytes`, else None (missing, larger, not a PNG)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError:
        return None
    if len(raw) > max_bytes or not raw.startswith(_PNG_MAGIC):
        return None
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
