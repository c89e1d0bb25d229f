"""Attention sinks of a call: which keys, where, and the share of the attention they take.

The criterion (`SinkCriterion`, `detect_sinks`) lives in pi0viz.core.sinks, so the renderer's --exclude-sinks and
these reports agree on what a sink is: a key whose fused probability (max over heads) is at least 0.2 in at least
90 % of the action-token rows of a denoising step and layer. Shares are head-mean probability mass.

A pi0-FAST decoding call has one query per decode step, and one row cannot tell a sink from a hot patch. Its rows
are the decode steps of a layer (`find_decode_sinks`): key s is a sink in layer l when its fused probability is at
least 0.2 in at least 90 % of that layer's decode-step rows, and then a sink of every step j of that layer whose
query can see s (a generated token's key from the step it was generated). A patch that one generated token looks at
is not a sink; the prompt's first token that every step reads is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from pi0viz.analysis.maps import ActionMaps, DecodeKeyMaps
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


def describe_decode_key(maps: DecodeKeyMaps, key: int) -> dict[str, Any]:
    """Where key `key` of a decoding call's key axis (DecodeKeyMaps: unaligned prefix, then generated tokens) comes
    from: {"key", "region", "kind"} plus "patch": [row, col] for a camera patch, "token" (its slot) and "piece" for
    a prompt token, "index" (the decode step that generated it) and "piece" for a generated token."""
    rows, cols = maps.patch_grid
    ppc, P = rows * cols, maps.num_prefix_keys
    C = len(maps.camera_names)
    if 0 <= key < C * ppc:
        i = key % ppc
        return {"key": int(key), "region": maps.camera_names[key // ppc], "kind": "camera",
                "patch": [i // cols, i % cols]}
    if C * ppc <= key < P:
        t = key - C * ppc
        return {"key": int(key), "region": "text", "kind": "text", "token": t, "piece": maps.token_pieces[t]}
    if P <= key < maps.mean.shape[-1]:
        i = key - P
        return {"key": int(key), "region": "generated", "kind": "generated", "index": i,
                "piece": maps.generated_pieces[i]}
    raise AnalysisError(f"key {key} is outside the capture's {maps.mean.shape[-1]} keys")


def find_decode_sinks(maps: DecodeKeyMaps, criterion: SinkCriterion | None = None) -> SinkResult:
    """Sinks of a decoding call (see the module docstring): the decode steps of a layer are its rows.

    Returns:
        SinkResult with sinks bool[J, L, S] (a layer's sinks, at the steps whose query sees them), share
        float32[J, L] (head-mean mass on them in each step's row) and key_share float32[J, L, S] (= maps.mean).
    """
    criterion = criterion or SinkCriterion()
    rows = maps.peak.transpose(1, 0, 2)[None]  # [1, L, J, S]: the decode steps in the rows' place
    per_layer = detect_sinks(rows, maps.valid.any(axis=0), criterion)[0]  # [L, S]
    sinks = per_layer[None] & maps.valid[:, None, :]  # [J, L, S]
    share = (maps.mean * sinks).sum(axis=-1, dtype=np.float32)
    return SinkResult(sinks=sinks, share=share, key_share=maps.mean, criterion=criterion)


def sink_report(result: SinkResult, maps: ActionMaps | DecodeKeyMaps,
                pieces: Sequence[str] | None = None) -> dict[str, Any]:
    """JSON-ready description of a call's sinks (a denoising call's ActionMaps or a decoding call's DecodeKeyMaps,
    whose "step" is then the decode step and whose pieces come from the maps).

    Returns:
        {"criterion": {...}, "share": [[D] x [L]] mass on sinks, "cells": [{"step", "layer", "sinks": [key
        descriptions with "share"]}] for cells that have any, "keys": per sink key over the call {"cells": number
        of (step, layer) cells where it is a sink, "mean_share": its mass averaged over those cells}}.
    """
    if isinstance(maps, DecodeKeyMaps):
        def describe(k: int) -> dict[str, Any]:
            return describe_decode_key(maps, k)
    else:
        def describe(k: int) -> dict[str, Any]:
            return describe_key(maps.layout, k, pieces)
    cells = []
    for d, l in zip(*np.nonzero(result.sinks.any(axis=-1))):
        keys = np.flatnonzero(result.sinks[d, l])
        cells.append({
            "step": int(maps.step_labels[d]), "layer": int(maps.layer_labels[l]),
            "share": float(result.share[d, l]),
            "sinks": [dict(describe(int(k)), share=float(result.key_share[d, l, k])) for k in keys],
        })
    counts = result.sinks.sum(axis=(0, 1))  # [S]
    keys = []
    for k in np.flatnonzero(counts):
        where = result.sinks[:, :, k]
        keys.append(dict(describe(int(k)), cells=int(counts[k]),
                         mean_share=float(result.key_share[:, :, k][where].mean())))
    keys.sort(key=lambda e: -e["cells"])
    return {
        "criterion": dataclasses.asdict(result.criterion),
        "steps": [int(s) for s in maps.step_labels], "layers": [int(x) for x in maps.layer_labels],
        "share": np.round(result.share, 6).tolist(),
        "cells": cells,
        "keys": keys,
    }
