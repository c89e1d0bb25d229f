"""Grounding metrics of one call for the sweep's records: a few scalars per camera from pi0viz.analysis.

The env worker segments the task's objects in the frames of every call (`LiberoSegmenter.call_masks`) and hands
the masks to the call's attention task, which calls `call_metrics(bundle, masks)` and stores each returned scalar
under "metrics/<name>" in the episode record (float32[N], one value per call); `pi0viz.sweep.results` averages
them per task and for success vs failure. Names (camera = a bundle camera slot that has a mask):

    <camera>.<metric>             the call's mean over every denoising step, layer and action token
                                  (analysis' summary "mean"), metric in CAMERA_SCALARS
    <camera>.<metric>.best_layer  the highest of the per-layer means (analysis' "by_layer" curve): how grounded
                                  the most grounded layer is, metric in GROUNDED (higher = more on the objects)
    prefix.<metric>               object / prompt share of the prefix attention, metric in PREFIX_SCALARS

Every number comes from `pi0viz.analysis.metrics.analyze_call` on the whole capture (all stored steps and
layers, whatever --steps/--layers keep in the record); docs/analysis.md defines the metrics. A metric that is
undefined for a call (e.g. lift of a camera that does not see the objects) is NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pi0viz.core.bundle import CaptureBundle

GROUNDED = ("mass_in_camera", "lift", "iou10", "iou25", "iou50", "pointing_hit")
CAMERA_SCALARS = GROUNDED + ("entropy",)
PREFIX_SCALARS = ("object_share", "text_share")

ANALYSIS_STATUS = "grounding metrics: not computed (the sweep ran with --no-grounding, or no episode has a call yet)"


def _f32(value: float | None) -> np.ndarray:
    return np.float32(np.nan if value is None else value)[()]


def _best(curve: list[float | None]) -> np.ndarray:
    values = [v for v in curve if v is not None and math.isfinite(v)]
    return _f32(max(values) if values else None)


def call_metrics(bundle: CaptureBundle, masks: Any = None) -> dict[str, np.ndarray]:
    """Grounding scalars of one call.

    Args:
        bundle: the call's capture (B = 1).
        masks: `pi0viz.analysis.masks.CallMasks` of the call's frames, or None (no grounding: returns {}).

    Returns:
        {name: float32[] scalar} as listed in the module docstring.
    """
    if masks is None:
        return {}
    from pi0viz.analysis.masks import masks_for_bundle
    from pi0viz.analysis.metrics import analyze_call

    coverage, has_mask = masks_for_bundle(masks, list(bundle.camera_names))
    summary, _ = analyze_call(bundle, coverage=coverage, has_mask=has_mask, objects=masks.objects)
    g = summary["grounding"]
    out: dict[str, np.ndarray] = {}
    for camera, block in g["cameras"].items():
        for m in CAMERA_SCALARS:
            out[f"{camera}.{m}"] = _f32(block["mean"][m])
        for m in GROUNDED:
            out[f"{camera}.{m}.best_layer"] = _best(block["by_layer"][m])
    for m in PREFIX_SCALARS:
        out[f"prefix.{m}"] = _f32(g["prefix"]["mean"][m])
    return out
