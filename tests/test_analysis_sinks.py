"""Sink detection against planted ground truth, and no false sinks where there are none."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundle_support import small

from pi0viz.analysis.maps import action_maps
from pi0viz.analysis.sinks import (
    SinkCriterion,
    describe_key,
    detect_sinks,
    find_sinks,
    sink_report,
)
from pi0viz.errors import AnalysisError


def plant_sink(bundle, key: int, share: float) -> None:
    """Give `share` of every action row (all steps, layers, heads) to `key`; rescale the other valid keys."""
    q = bundle.layout.action_queries()
    att = bundle.attention[:, :, :, :, :, q].astype(np.float64)  # [D, L, B, K, G, A, S]
    att[..., key] = 0
    att *= (1 - share) / att.sum(-1, keepdims=True)
    att[..., key] = share
    bundle.attention[:, :, :, :, :, q] = att.astype(bundle.attention.dtype)


def test_planted_sink_is_found_in_every_step_and_layer_with_its_share() -> None:
    b = small()
    bos = b.layout.text_region.start  # the BOS token, the classic sink
    plant_sink(b, bos, 0.6)
    result = find_sinks(action_maps(b))
    D, L, S = result.sinks.shape
    expected = np.zeros((D, L, S), bool)
    expected[:, :, bos] = True
    np.testing.assert_array_equal(result.sinks, expected)
    np.testing.assert_allclose(result.share, 0.6, atol=1e-5)
    report = sink_report(result, action_maps(b), pieces=list(b.token_pieces[0]))
    json.dumps(report)  # JSON-ready
    assert report["keys"] == [{"key": bos, "region": "text", "kind": "text", "token": 0, "piece": "<bos>",
                               "cells": D * L, "mean_share": pytest.approx(0.6, abs=1e-5)}]
    assert len(report["cells"]) == D * L


def test_a_sink_on_a_camera_patch_is_described_by_its_patch() -> None:
    b = small()
    key = b.layout.camera_region(1).start + 5 * 16 + 9
    plant_sink(b, key, 0.6)
    result = find_sinks(action_maps(b))
    assert np.flatnonzero(result.sinks.any(axis=(0, 1))).tolist() == [key]
    assert describe_key(b.layout, key) == {"key": key, "region": "left_wrist_0_rgb", "kind": "camera", "patch": [5, 9]}


def test_a_hot_patch_of_one_action_token_is_not_a_sink() -> None:
    from pi0viz.core.synthetic import place_hot_key

    b = small()
    for head in range(8):
        place_hot_key(b, step=1, layer=2, action_token=3, head=head, key=40, mass=0.9)
    assert not find_sinks(action_maps(b)).sinks.any()


def test_no_false_sinks_on_a_capture_without_sinks() -> None:
    b = small(num_action_tokens=10)
    result = find_sinks(action_maps(b))
    assert not result.sinks.any() and (result.share == 0).all()


@pytest.mark.parametrize("alpha", [1.0, 0.1, 0.01])
def test_no_false_sinks_on_random_dirichlet_rows(alpha: float) -> None:
    """Independent random rows, from diffuse (alpha 1) to very peaked (alpha 0.01: a few keys take most of a row),
    8 heads, 50 action tokens, all 867 keys valid."""
    rng = np.random.default_rng(7)
    D, L, A, H, S = 2, 3, 50, 8, 867
    peak = rng.dirichlet(np.full(S, alpha), size=(D, L, A, H)).max(axis=3).astype(np.float32)
    if alpha <= 0.01:
        assert peak.max() > 0.2  # peaked rows do have single keys above the threshold...
    assert not detect_sinks(peak, np.ones(S, bool)).any()  # ...but never the same key in 90 % of the rows


def test_criterion_thresholds_and_validation() -> None:
    peak = np.zeros((1, 1, 10, 4), np.float32)
    peak[0, 0, :9, 1] = 0.25  # key 1 reaches 0.25 in 9 of 10 rows
    peak[0, 0, :8, 2] = 0.25  # key 2 in 8 of 10
    valid = np.ones(4, bool)
    assert detect_sinks(peak, valid)[0, 0].tolist() == [False, True, False, False]
    assert detect_sinks(peak, valid, SinkCriterion(row_fraction=0.8))[0, 0].tolist() == [False, True, True, False]
    assert not detect_sinks(peak, valid, SinkCriterion(min_value=0.3)).any()
    valid[1] = False
    assert not detect_sinks(peak, valid)[0, 0, 1]  # masked keys are never sinks
    with pytest.raises(AnalysisError, match="min_value"):
        SinkCriterion(min_value=0)
