"""Masks, positions and flow times, against hand-written expectations."""

from __future__ import annotations

import numpy as np

from pi0viz.model import Pi0Config, diffusion_times, make_attn_mask
from pi0viz.model.pi0 import posemb_sincos, suffix_ar_mask


def test_make_attn_mask_worked_rows():
    valid = np.array([[True, True, True, True, False]])
    causal = np.asarray(make_attn_mask(valid, np.array([1, 1, 1, 1, 1], bool)))[0]
    np.testing.assert_array_equal(causal[:4, :4], np.tril(np.ones((4, 4), bool)))
    assert not causal[4].any() and not causal[:, 4].any()  # padding neither sees nor is seen
    blocks = np.asarray(make_attn_mask(np.ones((1, 4), bool), np.array([1, 1, 0, 0], bool)))[0]
    np.testing.assert_array_equal(blocks, [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_pi0_suffix_mask():
    ar = np.asarray(suffix_ar_mask(Pi0Config.tiny()))
    assert ar.shape == (51,) and ar[:2].all() and not ar[2:].any()
    m = np.asarray(make_attn_mask(np.ones((1, 51), bool), ar))[0]
    assert m[0, 0] and not m[0, 1:].any()  # state token sees only itself
    assert m[1:].all()  # every action token sees the state and all actions


def test_denoising_times_follow_float32_accumulation():
    t = diffusion_times(10)
    assert t.dtype == np.float32 and len(t) == 10
    expect = [np.float32(1.0)]
    for _ in range(9):
        expect.append(np.float32(expect[-1] + np.float32(-0.1)))
    np.testing.assert_array_equal(t, expect)
    assert t[2] == np.float32(0.79999995)
    assert len(diffusion_times(3)) == 3 and len(diffusion_times(1)) == 1


def test_posemb_sincos_halves():
    emb = np.asarray(posemb_sincos(np.array([0.0, 0.5], np.float32), 64))
    assert emb.shape == (2, 64)
    np.testing.assert_allclose(emb[0], np.r_[np.zeros(32), np.ones(32)], atol=0)  # t = 0: sin 0, cos 1
    np.testing.assert_allclose(emb[1, :32] ** 2 + emb[1, 32:] ** 2, 1.0, atol=1e-6)
    # The first frequency has period 4e-3: t = 0.5 is 125 periods, so sin ~ 0, cos ~ 1.
    np.testing.assert_allclose(emb[1, [0, 32]], [0.0, 1.0], atol=1e-4)
