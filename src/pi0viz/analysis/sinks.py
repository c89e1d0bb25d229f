"""Attention sinks: keys that soak up attention whatever the query asks.

Criterion (per call, denoising step and layer; `SinkCriterion`): key s is a sink in (step d, layer l) when its
fused probability (max over heads, the value the renderer draws) is at least `min_value` (default 0.2) in at
least `row_fraction` (default 90 %) of the action-token rows of that step and layer:

    sink[d, l, s]  =  mean_a( peak[d, l, a, s] >= min_value )  >=  row_fraction

Why this test: a sink is content-blind, so it shows up in (almost) every row, and it is large, so it sets the
color scale. 0.2 is 170 x the uniform share of pi0's 867 keys; a key that merely catches one action token's eye
(a hot object patch) fails the row test, and independent random rows never pass it (for a key to reach 0.2 in
45 of 50 Dirichlet rows is astronomically unlikely). What it cannot tell apart: an object that *every* action
token of a step and layer looks at with >= 0.2. Compare sinks across calls (the "keys" of `sink_report`): a true sink
stays on the same key while the scene changes.

The share a sink takes is reported as head-mean probability mass (the fraction of the row's attention it really
receives, averaged over the action tokens), so "the BOS token takes 0.6 of layer 3" means exactly that.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from pi0viz.errors import AnalysisError
from pi0viz.analysis.maps import ActionMaps
from pi0viz.core.layout import AttentionLayout


@dataclasses.dataclass(frozen=True)
class SinkCriterion:
    """When a key counts as a sink (see the module docstring).

    Attributes:
        min_value: fused probability (max over heads) the key must reach in a row, in (0, 1].
        row_fraction: share of the action-token rows of a (step, layer) in which it must reach it, in (0, 1].
    """

    min_value: float = 0.2
    row_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.min_value <= 1:
            raise AnalysisError(f"sink min_value must be in (0, 1], got {self.min_value}")
        if not 0 < self.row_fraction <= 1:
            raise AnalysisError(f"sink row_fraction must be in (0, 1], got {self.row_fraction}")


def detect_sinks(peak: np.ndarray, valid: np.ndarray, criterion: SinkCriterion = SinkCriterion()) -> np.ndarray:
    """Which keys are sinks in each (step, layer).

    Args:
        peak: float[D, L, A, S], fused (max over heads) probabilities of the action rows.
        valid: bool[S], keys the action rows may attend to (masked keys are never sinks).
        criterion: thresholds.

    Returns:
        bool[D, L, S].
    """
    A = peak.shape[2]
    rows_needed = int(np.ceil(criterion.row_fraction * A - 1e-9))  # integer count: no float ties
    hits = np.count_nonzero(peak >= criterion.min_value, axis=2)  # [D, L, S]
    return (hits >= max(rows_needed, 1)) & np.asarray(valid, bool)


def describe_key(layout: AttentionLayout, key: int, pieces: Sequence[str] | None = None) -> dict[str, Any]:
    """Where key `key` comes from: {"key", "region", "kind"} plus "patch": [row, col] for a camera patch or
    "token": slot and "piece" for a prompt token, "index" for a state/action key."""
    for region in layout.regions():
        if region.start <= key < region.stop:
            out: dict[str, Any] = {"key": int(key), "region": region.name, "kind": region.kind}
            i = key - region.start
            if region.kind == "camera":
                out["patch"] = [i // layout.patch_grid[1], i % layout.patch_grid[1]]
            elif region.kind == "text":
                out["token"] = i
                if pieces is not None:
                    out["piece"] = str(pieces[i])
            else:
                out["index"] = i
            return out
    raise AnalysisError(f"key {key} is outside the capture's {layout.num_keys} keys")


@dataclasses.dataclass
class SinkResult:
    """Sinks of one call.

    Attributes:
        sinks: bool[D, L, S], the criterion per step and layer.
        share: float32[D, L], head-mean mass on the sinks (0 where there are none).
        key_share: float32[D, L, S], head-mean mass of every key, averaged over the action rows.
        criterion: the thresholds used.
    """

    sinks: np.ndarray
    share: np.ndarray
    key_share: np.ndarray
    criterion: SinkCriterion


def find_sinks(maps: ActionMaps, criterion: SinkCriterion = SinkCriterion()) -> SinkResult:
    """Sinks and their share for every step and layer of one call."""
    sinks = detect_sinks(maps.peak, maps.valid, criterion)
    key_share = maps.mean.mean(axis=2, dtype=np.float32)  # [D, L, S]
    share = (key_share * sinks).sum(axis=-1, dtype=np.float32)
    return SinkResult(sinks=sinks, share=share, key_share=key_share, criterion=criterion)


def sink_report(result: SinkResult, maps: ActionMaps, pieces: Sequence[str] | None = None) -> dict[str, Any]:
    """JSON-ready description of a call's sinks.

    Returns:
        {"criterion": {...}, "share": [[D] x [L]] mass on sinks, "cells": [{"step", "layer", "sinks": [key
        descriptions with "share"]}] for cells that have any, "keys": per sink key over the call {"cells": number
        of (step, layer) cells where it is a sink, "mean_share": its mass averaged over those cells}}.
    """
    D, L, S = result.sinks.shape
    cells = []
    for d, l in zip(*np.nonzero(result.sinks.any(axis=-1))):
        keys = np.flatnonzero(result.sinks[d, l])
        cells.append({
            "step": int(maps.step_labels[d]), "layer": int(maps.layer_labels[l]),
            "share": float(result.share[d, l]),
            "sinks": [dict(describe_key(maps.layout, int(k), pieces), share=float(result.key_share[d, l, k]))
                      for k in keys],
        })
    counts = result.sinks.sum(axis=(0, 1))  # [S]
    keys = []
    for k in np.flatnonzero(counts):
        where = result.sinks[:, :, k]
        keys.append(dict(describe_key(maps.layout, int(k), pieces), cells=int(counts[k]),
                         mean_share=float(result.key_share[:, :, k][where].mean())))
    keys.sort(key=lambda e: -e["cells"])
    return {
        "criterion": dataclasses.asdict(result.criterion),
        "steps": [int(s) for s in maps.step_labels], "layers": [int(x) for x in maps.layer_labels],
        "share": np.round(result.share, 6).tolist(),
        "cells": cells,
        "keys": keys,
    }
