"""Grounding metrics: does an action token's attention land on the task's objects?

For every denoising step d, layer l and action token a (one row of head-mean probabilities over the keys, from
`pi0viz.analysis.maps`) and every camera c that has an object mask (coverage m[p] in [0, 1] of each of the
camera's n patches, from `pi0viz.analysis.masks`), with x[p] the attention on patch p of that camera:

    mass          sum_p x[p] m[p]                          share of the whole row that lands on the objects
    mass_in_camera  mass / sum_p x[p]                      share of the camera's attention on the objects
                                                           (vla-interp's "attention mass", normalized per image)
    lift          mass_in_camera / (sum_p m[p] / n)        1 = no better than spreading uniformly over the camera
    iou10/25/50   top set T_k = {p : x[p] >= percentile(x, 100 - k)} (numpy's linear percentile, ties included),
                  IoU = sum_{p in T_k} m[p] / (|T_k| + sum_p m[p] - sum_{p in T_k} m[p]), 0 when the union is empty
    pointing_hit  m[argmax_p x] > 0 (the hottest patch touches an object); pointing_cover = m[argmax_p x]
    entropy       -sum_p q[p] ln q[p] / ln n with q = x / sum x: 0 = one patch, 1 = uniform over the camera

and over the whole prefix (all cameras and the prompt): object_mass (sum over cameras of `mass`), object_share
= object_mass / prefix mass, text_share = prompt mass / prefix mass (the linguistic side of vla-interp's
visual/linguistic ratio), prefix_mass (share of the row on the prefix at all, the rest goes to state/actions).

The top-k% IoU, mass and pointing hit follow vla-interp's analysis/attention/attention_iou.py
(Hither1/vla-interp @ afecc09: `threshold_attention(heatmap, "percentile", 100 - k)`, `compute_iou`,
`attention_mass`, `pointing_hit`) with one difference: vla-interp compares a heat map resized to the 256 x 256
segmentation image; here the mask goes through the model's own image transform onto the 16 x 16 patch grid and
each patch carries its covered fraction. With the attention drawn as flat patch blocks (as pi0viz renders it),
the patch-level IoU above equals the pixel-level IoU at the 224 x 224 model input.

Everything is computed for all D x L x A cells at once (float[cells, patches] arrays, cells = D * L * A; a pi0
call: 9,000 cells).

A pi0-FAST decoding call (`decode_grounding`): each decode step's one query in each layer is a row (D = J decode
steps, A = 1); x is its attention on the camera's patches among the prefix keys, and prefix_mass its share on the
prefix at all (the rest goes to the tokens generated so far).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pi0viz.analysis.maps import ActionMaps, DecodeKeyMaps
from pi0viz.core.tables import number_cell, write_csv
from pi0viz.errors import AnalysisError

TOP_PERCENTS = (10, 25, 50)
CAMERA_METRICS = ("mass", "mass_in_camera", "lift", "iou10", "iou25", "iou50", "pointing_hit", "pointing_cover",
                  "entropy")
PREFIX_METRICS = ("object_mass", "object_share", "text_share", "prefix_mass")


def camera_metrics(x: np.ndarray, coverage: np.ndarray) -> dict[str, np.ndarray]:
    """Grounding metrics of many attention rows over one camera against one coverage mask.

    Args:
        x: float[cells, patches] attention on the camera's patches (raster order), any non-negative scale.
        coverage: float[patches] fraction of each patch covered by the objects, in [0, 1].

    Returns:
        {name: float32[cells]} for every name in CAMERA_METRICS. Ratios with a zero denominator (a camera that
        gets no attention, an empty mask for lift) are NaN; IoU with an empty union is 0 (as vla-interp).
    """
    x = np.asarray(x, np.float32)
    m = np.asarray(coverage, np.float32).reshape(-1)
    cells, n = x.shape  # n patches
    if m.shape != (n,):
        raise AnalysisError(f"coverage has {m.size} patches, the camera has {n}")
    area = float(m.sum())
    total = x.sum(axis=-1)  # [cells]
    # einsum rather than `@`: a matrix-vector product through BLAS costs ~5x more here (threads, casts)
    mass = np.einsum("np,p->n", x, m)  # [cells]
    with np.errstate(divide="ignore", invalid="ignore"):
        in_camera = np.where(total > 0, mass / total, np.nan)
        lift = in_camera / (area / n) if area > 0 else np.full(cells, np.nan, np.float32)
    out = {"mass": mass, "mass_in_camera": in_camera, "lift": lift}
    ordered = np.sort(x, axis=-1)  # one sort serves every threshold
    for k in TOP_PERCENTS:
        thr = row_percentile(ordered, 100 - k)  # [cells]
        top = x >= thr[:, None]  # [cells, patches]
        inter = np.einsum("np,p->n", top, m)
        union = np.count_nonzero(top, axis=-1) + area - inter
        out[f"iou{k}"] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    cover = m[x.argmax(axis=-1)]
    out["pointing_hit"] = (cover > 0).astype(np.float32)
    out["pointing_cover"] = cover
    # H(x / t) = ln t - sum(x ln x) / t: one log pass over the rows, no normalized copy (0 ln 0 = 0).
    xlogx = (x * np.log(np.maximum(x, np.finfo(np.float32).tiny))).sum(axis=-1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = total.astype(np.float64)
        entropy = (np.log(t) - xlogx / t) / np.log(n) if n > 1 else np.zeros(cells)
    out["entropy"] = np.where(total > 0, np.clip(entropy, 0.0, 1.0), np.nan)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def row_percentile(ordered: np.ndarray, q: float) -> np.ndarray:
    """`np.percentile(x, q, axis=-1)` (method "linear") from rows already sorted ascending, [rows] in x's dtype.

    Same arithmetic as numpy's linear method (virtual index (P - 1) q / 100, numpy's two-sided lerp), so the
    top sets equal vla-interp's `heatmap >= np.percentile(heatmap, q)` exactly, at a fraction of the cost.
    """
    P = ordered.shape[-1]
    pos = (P - 1) * q / 100.0
    lo = int(np.floor(pos))
    hi = min(lo + 1, P - 1)
    t = pos - lo
    a, b = ordered[:, lo], ordered[:, hi]
    diff = b - a
    t = np.asarray(t, ordered.dtype)  # numpy interpolates in the input's precision
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


@dataclasses.dataclass
class CallGrounding:
    """Grounding metrics of one call, for every step, layer and action token.

    Attributes:
        cameras: names of the cameras that have a mask (and are not padded slots), in slot order.
        per_camera: {metric: float32[C', D, L, A]} for every metric of CAMERA_METRICS.
        prefix: {metric: float32[D, L, A]} for every metric of PREFIX_METRICS.
        area_share: float32[C'], covered fraction of each camera's patches.
        step_labels, layer_labels: the tree's numbers for the D and L axes.
        call_kind: "denoising" (pi0, pi0.5) or "decoding" (pi0-FAST: D holds the J decode steps and A = 1, the
            step's one query).
    """

    cameras: list[str]
    per_camera: dict[str, np.ndarray]
    prefix: dict[str, np.ndarray]
    area_share: np.ndarray
    step_labels: np.ndarray
    layer_labels: np.ndarray
    call_kind: str = "denoising"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.prefix["prefix_mass"].shape  # type: ignore[return-value]


def _check_coverage(coverage: np.ndarray, C: int, grid: tuple[int, int], names: Sequence[str]) -> np.ndarray:
    rows, cols = grid
    coverage = np.asarray(coverage, np.float32)
    if coverage.shape != (C, rows, cols):
        raise AnalysisError(f"masks have shape {list(coverage.shape)}, the capture expects [C={C}, {rows}, {cols}] "
                            f"(one coverage grid per camera slot {list(names)})")
    if not np.isfinite(coverage).all() or coverage.min() < 0 or coverage.max() > 1 + 1e-6:
        raise AnalysisError("mask coverage must be fractions in [0, 1] (no NaN)")
    return coverage


def _rows_grounding(flat: np.ndarray, shape: tuple[int, int, int], cameras: Sequence[tuple[str, slice, np.ndarray]],
                    text: slice, prefix: slice, step_labels: np.ndarray, layer_labels: np.ndarray,
                    call_kind: str) -> CallGrounding:
    """The metrics of rows `flat` float[cells, S] (cells = D x L x A, `shape`) for cameras (name, key slice,
    coverage float[patches]); the prompt's and the prefix's key slices give text_share and prefix_mass."""
    D, L, A = shape
    names, per_cam, areas = [], {k: [] for k in CAMERA_METRICS}, []
    object_mass = np.zeros(flat.shape[0], np.float32)
    for name, keys, cover in cameras:
        x = np.ascontiguousarray(flat[:, keys])  # one copy; every pass below then reads it linearly
        metrics = camera_metrics(x, cover.reshape(-1))
        for k in CAMERA_METRICS:
            per_cam[k].append(metrics[k].reshape(D, L, A))
        object_mass += metrics["mass"]
        names.append(name)
        areas.append(float(cover.mean()))
    if not names:
        raise AnalysisError("no camera has an object mask: nothing to measure (check the masks' camera names)")
    prefix_mass = flat[:, prefix].sum(axis=-1)
    text_mass = flat[:, text].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "object_mass": object_mass,
            "object_share": np.where(prefix_mass > 0, object_mass / prefix_mass, np.nan),
            "text_share": np.where(prefix_mass > 0, text_mass / prefix_mass, np.nan),
            "prefix_mass": prefix_mass,
        }
    return CallGrounding(
        cameras=names,
        per_camera={k: np.stack(v).astype(np.float32) for k, v in per_cam.items()},
        prefix={k: np.asarray(v, np.float32).reshape(D, L, A) for k, v in out.items()},
        area_share=np.asarray(areas, np.float32),
        step_labels=step_labels, layer_labels=layer_labels, call_kind=call_kind,
    )


def call_grounding(maps: ActionMaps, coverage: np.ndarray, has_mask: Sequence[bool],
                   image_mask: Sequence[bool] | None = None) -> CallGrounding:
    """Grounding metrics of one call.

    Args:
        maps: the call's action maps (head-mean probabilities are used).
        coverage: float[C, rows, cols] object coverage per camera slot (values of slots without a mask ignored).
        has_mask: bool[C], which camera slots have a mask.
        image_mask: bool[C], False for padded camera slots (skipped even if they have a mask); default all True.
            Cameras that the one camera rule does not draw (`maps.drawn_mask`: masked, or silent) are skipped too.

    Returns:
        CallGrounding.
    """
    layout = maps.layout
    C = layout.num_cameras
    coverage = _check_coverage(coverage, C, layout.patch_grid, layout.camera_names)
    drawn = maps.drawn_mask
    image_mask = [bool(drawn[c]) and (image_mask is None or bool(image_mask[c])) for c in range(C)]
    D, L, A, S = maps.mean.shape
    cams = [(layout.camera_names[c], layout.camera_region(c).slice, coverage[c]) for c in range(C)
            if has_mask[c] and image_mask[c]]
    return _rows_grounding(maps.mean.reshape(-1, S), (D, L, A), cams, layout.text_region.slice,
                           slice(0, layout.num_prefix_keys), maps.step_labels, maps.layer_labels, "denoising")


def decode_grounding(maps: DecodeKeyMaps, coverage: np.ndarray, has_mask: Sequence[bool],
                     image_mask: Sequence[bool] | None = None) -> CallGrounding:
    """Grounding metrics of one decoding (pi0-FAST) call: every decode step's query in every layer is one row.

    Args and metrics as `call_grounding`: x is the head-mean attention of the step's query on a camera's patches
    (the unaligned prefix keys only); `prefix_mass` is the share of the row on the prefix at all (the rest goes to
    the tokens generated so far), `text_share` the prompt's share of it. A camera the one camera rule does not draw
    (masked, or never attended) is skipped.

    Returns:
        CallGrounding with D = the J decode steps and A = 1 (call_kind "decoding").
    """
    C = len(maps.camera_names)
    coverage = _check_coverage(coverage, C, maps.patch_grid, maps.camera_names)
    drawn = maps.drawn_mask
    keep = [bool(drawn[c]) and bool(has_mask[c]) and (image_mask is None or bool(image_mask[c])) for c in range(C)]
    ppc = maps.patch_grid[0] * maps.patch_grid[1]
    J, L, S = maps.mean.shape
    cams = [(maps.camera_names[c], slice(c * ppc, (c + 1) * ppc), coverage[c]) for c in range(C) if keep[c]]
    return _rows_grounding(maps.mean.reshape(-1, S), (J, L, 1), cams, slice(C * ppc, maps.num_prefix_keys),
                           slice(0, maps.num_prefix_keys), maps.step_labels, maps.layer_labels, "decoding")


# -- aggregation ---------------------------------------------------------------------------------------


def _nanmean(x: np.ndarray, axis: Any = None) -> Any:
    with np.errstate(invalid="ignore", divide="ignore"):
        count = np.sum(~np.isnan(x), axis=axis)
        total = np.nansum(x, axis=axis)
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if np.ndim(out) == 0 else out


def _clean(value: Any) -> Any:
    """float or list with NaN -> None (JSON has no NaN), rounded to 6 decimals."""
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), 6)


def grounding_summary(g: CallGrounding) -> dict[str, Any]:
    """Per-call aggregates: every metric averaged over all rows, and its curves over layers and steps.

    Returns (JSON-ready; NaN rows are left out of means, a mean of nothing is None):
        {"cameras": {name: {"area_share", "mean": {metric: v}, "by_layer": {metric: [L]}, "by_step": {metric: [D]}}},
         "prefix": {"mean": {...}, "by_layer": {...}, "by_step": {...}}, "steps": [D], "layers": [L]}
    """
    def block(arrays: dict[str, np.ndarray], select: Any) -> dict[str, Any]:
        return {
            "mean": {k: _clean(_nanmean(v[select])) for k, v in arrays.items()},
            "by_layer": {k: _clean(_nanmean(v[select], axis=(0, 2))) for k, v in arrays.items()},
            "by_step": {k: _clean(_nanmean(v[select], axis=(1, 2))) for k, v in arrays.items()},
        }

    cams = {}
    for i, name in enumerate(g.cameras):
        cams[name] = {"area_share": _clean(g.area_share[i]), **block(g.per_camera, i)}
    return {"steps": [int(s) for s in g.step_labels], "layers": [int(x) for x in g.layer_labels],
            "cameras": cams, "prefix": block(g.prefix, Ellipsis)}


def aggregate(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average per-call (or per-episode) "mean" blocks: {"count", "cameras": {name: {metric: v}}, "prefix": {...}}.

    Each summary is given equal weight; metrics missing (None) in a summary are left out of its average.
    """
    cams: dict[str, dict[str, list[float]]] = {}
    prefix: dict[str, list[float]] = {}
    for s in summaries:
        for name, block in s["cameras"].items():
            for k, v in block["mean"].items():
                if v is not None:
                    cams.setdefault(name, {}).setdefault(k, []).append(v)
        for k, v in s["prefix"]["mean"].items():
            if v is not None:
                prefix.setdefault(k, []).append(v)

    def avg(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 6) if values else None

    return {"count": len(summaries),
            "cameras": {n: {"mean": {k: avg(v) for k, v in m.items()}} for n, m in cams.items()},
            "prefix": {"mean": {k: avg(v) for k, v in prefix.items()}}}


# -- CSV -------------------------------------------------------------------------------------------------


def to_csv(g: CallGrounding, path: Any, *, call: int) -> None:
    """One row per (step, layer, action token): call, step, layer, action_token, then `<camera>.<metric>` for
    every camera and metric, then `prefix.<metric>`; a decoding call: one row per (decode step, layer), columns
    call, decode_step, layer, then the same metrics. NaN is written as an empty field."""
    write_csv(path, *csv_table(g, call=call))


def csv_table(g: CallGrounding, *, call: int) -> tuple[list[str], Iterator[list[str]]]:
    """`to_csv`'s header and rows (for core.tables.csv_text), for a writer that replaces several files together
    (`pi0viz metrics`: a call's JSON and CSV and the episode's file, all or none)."""
    D, L, A = g.shape
    dd, ll, aa = np.meshgrid(g.step_labels, g.layer_labels, np.arange(A), indexing="ij")
    columns = [np.full(D * L * A, call), dd.reshape(-1), ll.reshape(-1), aa.reshape(-1)]
    header = ["call", "step", "layer", "action_token"]
    if g.call_kind == "decoding":  # one query per decode step: no action-token column
        columns, header = columns[:3], ["call", "decode_step", "layer"]
    for i, name in enumerate(g.cameras):
        for k in CAMERA_METRICS:
            columns.append(g.per_camera[k][i].reshape(-1))
            header.append(f"{name}.{k}")
    for k in PREFIX_METRICS:
        columns.append(g.prefix[k].reshape(-1))
        header.append(f"prefix.{k}")
    table = np.stack(columns, axis=1).astype(np.float64).tolist()  # [cells, 4 (decoding: 3) + metrics]
    n = 3 if g.call_kind == "decoding" else 4
    rows = ([number_cell(v, "%d") for v in r[:n]] + [number_cell(v) for v in r[n:]] for r in table)
    # camera names come from the bundle: the header goes through the one cell escape (no formulas, no split rows)
    return header, rows
