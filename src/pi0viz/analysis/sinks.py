"""Attention sinks of a call: which keys, where, and the share of the attention they take.

The criterion (`SinkCriterion`, `detect_sinks`) lives in pi0viz.core.sinks, so the renderer's --exclude-sinks and
these reports agree on what a sink is: a key whose fused probability (max over heads) is at least 0.2 in at least
90 % of the action-token rows of a denoising step and layer. Shares are head-mean probability mass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from pi0viz.analysis.maps import ActionMaps
from pi0viz.core.layout import AttentionLayout
from pi0viz.core.sinks import SinkCriterion, detect_sinks
from pi0viz.errors import AnalysisError


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


def find_sinks(maps: ActionMaps, criterion: SinkCriterion | None = None) -> SinkResult:
    """Sinks and their share for every step and layer of one call (default criterion: SinkCriterion())."""
    criterion = criterion or SinkCriterion()
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
