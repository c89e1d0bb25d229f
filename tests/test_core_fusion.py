"""Fusion: masks, softmax, head max, color scales, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pi0viz.core.fusion import (
    ColorScale,
    FusionError,
    check_probabilities,
    fuse_call,
    fuse_heads,
    key_validity,
    logits_to_probs,
    scale_tops,
    to_levels,
)
from pi0viz.core.layout import AttentionLayout

# 2 cameras of 2 x 2 patches, 3 prompt slots, 1 state, 2 actions: S = 8 + 3 + 1 + 2 = 14, Q = 3.
LAYOUT = AttentionLayout(camera_names=("a", "b"), patch_grid=(2, 2), num_text_tokens=3, num_state_tokens=1,
                         num_action_tokens=2)
IMAGE_MASKS = np.array([[True, False]])
TOKEN_MASK = np.array([[True, True, False]])


def test_key_validity_is_pi0s_suffix_mask():
    v = key_validity(LAYOUT, IMAGE_MASKS, TOKEN_MASK)[0]  # [Q, S]
    prefix = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0]  # camera b masked, last prompt slot a pad
    assert v[0].astype(int).tolist() == prefix + [1, 0, 0]  # the state query sees the state, not the actions
    assert v[1].astype(int).tolist() == prefix + [1, 1, 1] == v[2].astype(int).tolist()  # actions see all suffix


def test_logits_to_probs_is_masked_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 1, 2, 3, 14)).astype(np.float32)  # [B, K, G, Q, S]
    valid = key_validity(LAYOUT, IMAGE_MASKS, TOKEN_MASK)
    p = logits_to_probs(logits, valid)
    for g in range(2):
        for q in range(3):
            keep = valid[0, q]
            e = np.exp(logits[0, 0, g, q, keep] - logits[0, 0, g, q, keep].max())
            np.testing.assert_allclose(p[0, 0, g, q, keep], e / e.sum(), rtol=1e-6)
            assert (p[0, 0, g, q, ~keep] == 0).all()
    check_probabilities(p, valid)  # and it passes the probability check


def test_check_probabilities_names_the_fix():
    valid = key_validity(LAYOUT, IMAGE_MASKS, TOKEN_MASK)
    p = logits_to_probs(np.zeros((1, 1, 1, 3, 14), np.float32), valid)
    leak = p.copy()
    leak[..., 5] = 0.05  # mass on masked camera b
    leak /= leak.sum(-1, keepdims=True)
    with pytest.raises(FusionError, match="masked keys"):
        check_probabilities(leak, valid)
    with pytest.raises(FusionError, match="attention_kind='logits'"):
        check_probabilities(p * 3, valid)


def test_fuse_heads_is_max_over_heads_on_action_rows():
    rng = np.random.default_rng(1)
    probs = rng.uniform(size=(2, 3, 1, 2, 4, 3, 14)).astype(np.float32)  # [D, L, B, K, G, Q, S]
    fused = fuse_heads(probs, LAYOUT)
    assert fused.shape == (2, 3, 1, 2, 14)
    np.testing.assert_array_equal(fused, probs[:, :, :, :, :, 1:].max(axis=(3, 4)))


def test_fuse_call_keeps_drawn_keys_and_region_mass():
    valid = key_validity(LAYOUT, IMAGE_MASKS, TOKEN_MASK)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 2, 1, 1, 4, 3, 14)).astype(np.float32)
    probs = logits_to_probs(logits.reshape(4, 1, 1, 4, 3, 14), valid).reshape(logits.shape)
    call = fuse_call(probs, LAYOUT, IMAGE_MASKS, TOKEN_MASK, keep_heads=True)
    assert call.keys.tolist() == [0, 1, 2, 3, 8, 9]  # camera a, then the two valid prompt tokens
    assert [r[0] for r in call.regions] == ["a", "text"]
    np.testing.assert_allclose(call.fused, probs[:, :, 0, 0, :, 1:][..., call.keys].max(axis=2))
    mass_a = probs[:, :, 0, 0, :, 1:, 0:4].sum(-1).mean(axis=2)  # head-averaged mass on camera a
    np.testing.assert_allclose(call.region_mass[..., 0], mass_a, rtol=1e-5)
    again = fuse_call(logits, LAYOUT, IMAGE_MASKS, TOKEN_MASK, kind="logits")
    np.testing.assert_allclose(again.fused, call.fused, rtol=1e-5)


def test_scales_and_levels():
    fused = np.zeros((2, 2, 1, 6), np.float32)  # [D, L, A, R]; regions: cam [0, 4), text [4, 6)
    regions = [("a", 0, 4), ("text", 4, 6)]
    fused[0, 0, 0] = [0.8, 0.4, 0.0, 0.0, 0.2, 0.1]
    fused[1, 1, 0] = [0.1, 0.0, 0.0, 0.0, 0.05, 0.0]
    cell = scale_tops(fused, regions, ColorScale("cell"))
    assert cell[0, 0, 0].tolist() == pytest.approx([0.8, 0.8]) and cell[1, 1, 0].tolist() == pytest.approx([0.1, 0.1])
    region = scale_tops(fused, regions, ColorScale("region"))
    assert region[0, 0, 0].tolist() == pytest.approx([0.8, 0.2])
    layer = scale_tops(fused, regions, ColorScale("layer"))
    assert layer[:, 0, 0, 0].tolist() == pytest.approx([0.8, 0.8])
    assert layer[:, 1, 0, 0].tolist() == pytest.approx([0.1, 0.1])
    glob = scale_tops(fused, regions, ColorScale("global"))
    assert (glob == np.float32(0.8)).all()
    lv = to_levels(fused, cell, regions, ColorScale("cell"))
    assert lv[0, 0, 0].tolist() == [255, 128, 0, 0, 64, 32]
    lv = to_levels(fused, cell, regions, ColorScale("cell", gamma=0.5))
    assert lv[0, 0, 0, 1] == round(255 * 0.5 ** 0.5)
    lv = to_levels(fused, cell, regions, ColorScale("cell", log_decades=2))
    assert lv[0, 0, 0, 0] == 255 and lv[0, 0, 0, 5] == round(255 * (1 + np.log10(0.125) / 2))
    pct = scale_tops(fused, regions, ColorScale("cell", percentile=50))
    assert pct[0, 0, 0, 0] == pytest.approx(np.percentile(fused[0, 0, 0], 50))
    with pytest.raises(FusionError, match="unknown color scale"):
        ColorScale("per-pixel")
