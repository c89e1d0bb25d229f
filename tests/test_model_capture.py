"""Attention capture: probabilities are well-formed, masks give exact zeros, capture never changes the actions,
reductions are slices of the full tensor, and checkpoints round-trip."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from pi0viz.model import (
    CaptureOptions,
    Observation,
    Pi0Config,
    load_params,
    sample_actions,
    save_params,
)
from pi0viz.model.gemma import BIG_NEG

DATA = Path(__file__).parent / "data" / "openpi_pi0_tiny"
CONFIG = Pi0Config.tiny()
B, P, TS = 2, 816, 51
RIGHT_WRIST = slice(512, 768)
PROMPT_LEN = (20, 48)  # valid prompt tokens per batch element


@pytest.fixture(scope="module")
def params():
    return load_params(DATA / "params")


@pytest.fixture(scope="module")
def obs() -> Observation:
    """Batch 2: element 0 has three cameras and a 20-token prompt; element 1 has the right wrist masked
    (zeros image, as LIBERO) and a full 48-token prompt."""
    case = np.load(DATA / "case_A.npz", allow_pickle=False)
    keys = [str(k) for k in case["image_keys"]]
    images = {k: np.concatenate([case[f"image/{k}"], case[f"image/{k}"][:, :, ::-1]]) for k in keys}
    images["right_wrist_0_rgb"][1] = -1.0
    masks = {k: np.array([True, k != "right_wrist_0_rgb"]) for k in keys}
    rng = np.random.default_rng(0)
    ids = np.asarray(case["tokenized_prompt"])[0]
    vocab = np.unique(ids)
    prompt = np.stack([ids, rng.choice(vocab, size=48)]).astype(np.int32)
    prompt_mask = np.arange(48)[None, :] < np.array(PROMPT_LEN)[:, None]
    state = np.concatenate([case["state"], case["state"] * -0.5]).astype(np.float32)
    return Observation(images=images, image_masks=masks, state=state, tokenized_prompt=prompt,
                       tokenized_prompt_mask=prompt_mask)


@pytest.fixture(scope="module")
def noise():
    return np.asarray(jax.random.normal(jax.random.key(3), (B, 50, 32)))


@pytest.fixture(scope="module")
def full(params, obs, noise):
    """Everything captured: probabilities, logits and the prefix pass."""
    return sample_actions(params, CONFIG, jax.random.key(0), obs, noise=noise,
                          capture=CaptureOptions(logits=True, prefix=True))


def valid_keys() -> np.ndarray:
    """bool[B, Q, S]: which keys each suffix query may see (independent statement of pi0's mask)."""
    valid = np.ones((B, TS, P + TS), dtype=bool)
    valid[1, :, RIGHT_WRIST] = False
    for b, n in enumerate(PROMPT_LEN):
        valid[b, :, 768 + n : P] = False
    valid[:, 0, P + 1 :] = False  # the state token cannot see the action tokens
    return valid


def test_shapes_and_times(full):
    assert full.actions.shape == (B, 50, 32) and full.actions.dtype == np.float32
    assert full.attention.shape == (10, 4, B, 1, 8, TS, P + TS)
    assert full.attention.dtype == np.float32
    assert full.attention_logits.shape == full.attention.shape
    assert full.prefix_attention.shape == (4, B, 1, 8, P, P)
    np.testing.assert_array_equal(np.asarray(full.diffusion_times)[:3], np.float32([1.0, 0.9, 0.79999995]))


def test_rows_sum_to_one_and_masked_keys_are_exactly_zero(full):
    att = np.asarray(full.attention)
    valid = np.broadcast_to(valid_keys()[None, None, :, None, None], att.shape)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=0, atol=1e-5)
    assert np.all(att[~valid] == 0.0)  # absent camera, padded prompt slots, state row -> actions
    assert np.all(att[valid] > 0.0)


def test_logits_are_the_scores_behind_the_probabilities(full):
    logits = np.asarray(full.attention_logits)
    valid = np.broadcast_to(valid_keys()[None, None, :, None, None], logits.shape)
    assert np.all(logits[~valid] == np.float32(BIG_NEG))
    assert np.all(np.isfinite(logits[valid])) and np.all(logits[valid] > -1e30)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits, axis=-1)), np.asarray(full.attention), atol=1e-6)


def test_prefix_attention(full):
    pa = np.asarray(full.prefix_attention)  # [L, B, K, G, P, P]
    prefix_valid = valid_keys()[:, 1, :P]  # [B, P]: which prefix tokens are real
    for b in range(B):
        rows = pa[:, b][..., prefix_valid[b], :]
        np.testing.assert_allclose(rows.sum(-1), 1.0, atol=1e-5)
        assert np.all(rows[..., ~prefix_valid[b]] == 0.0)


def test_capture_does_not_change_actions(params, obs, noise, full):
    plain = sample_actions(params, CONFIG, jax.random.key(0), obs, noise=noise)
    assert plain.attention is None and plain.attention_logits is None and plain.prefix_attention is None
    np.testing.assert_array_equal(np.asarray(plain.actions), np.asarray(full.actions))
    reduced = sample_actions(params, CONFIG, jax.random.key(0), obs, noise=noise, capture=CaptureOptions(
        action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16"))
    np.testing.assert_array_equal(np.asarray(reduced.actions), np.asarray(full.actions))


@pytest.mark.parametrize("opts", [
    dict(action_rows_only=True),
    dict(prefix_keys_only=True),
    dict(fuse_heads=True),
    dict(dtype="float16"),
    dict(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16"),
], ids=lambda o: "+".join(o))
def test_reductions_are_slices_of_the_full_tensor(params, obs, noise, full, opts):
    out = sample_actions(params, CONFIG, jax.random.key(0), obs, noise=noise, capture=CaptureOptions(**opts))
    expect = np.asarray(full.attention)
    if opts.get("action_rows_only"):
        expect = expect[..., 1:, :]
    if opts.get("prefix_keys_only"):
        expect = expect[..., :P]
    if opts.get("fuse_heads"):
        expect = expect.max(axis=(3, 4), keepdims=True)
    expect = expect.astype(opts.get("dtype", "float32"))
    got = np.asarray(out.attention)
    assert got.shape == expect.shape and got.dtype == expect.dtype
    np.testing.assert_array_equal(got, expect)


def test_default_noise_comes_from_rng(params, obs):
    a = sample_actions(params, CONFIG, jax.random.key(7), obs).actions
    b = sample_actions(params, CONFIG, jax.random.key(7), obs).actions
    c = sample_actions(params, CONFIG, jax.random.key(8), obs).actions
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3


def test_save_then_load_gives_identical_actions(params, obs, noise, full, tmp_path):
    save_params(params, tmp_path / "params")
    again = load_params(tmp_path / "params")
    out = sample_actions(again, CONFIG, jax.random.key(0), obs, noise=noise)
    np.testing.assert_array_equal(np.asarray(out.actions), np.asarray(full.actions))


def test_observation_errors_name_the_fix(params, obs):
    bad = Observation(images={k: v for k, v in obs.images.items() if k != "left_wrist_0_rgb"},
                      image_masks=obs.image_masks, state=obs.state, tokenized_prompt=obs.tokenized_prompt,
                      tokenized_prompt_mask=obs.tokenized_prompt_mask)
    with pytest.raises(ValueError, match="zeros and mask False"):
        sample_actions(params, CONFIG, jax.random.key(0), bad)
    small = Observation(images={k: v[:, :112, :112] for k, v in obs.images.items()}, image_masks=obs.image_masks,
                        state=obs.state, tokenized_prompt=obs.tokenized_prompt,
                        tokenized_prompt_mask=obs.tokenized_prompt_mask)
    with pytest.raises(ValueError, match="resize with pad"):
        sample_actions(params, CONFIG, jax.random.key(0), small)


def test_bfloat16_inference_tracks_float32(obs, noise, full):
    """openpi's inference numerics (bfloat16 weights and activations, float32 softmax): the same checkpoint cast
    on load gives actions within bfloat16 rounding of the float32 run, and the same exact-zero pattern."""
    p16 = load_params(DATA / "params", dtype="bfloat16")
    assert {str(x.dtype) for x in jax.tree.leaves(p16)} == {"bfloat16"}
    out = sample_actions(p16, Pi0Config.tiny(dtype="bfloat16"), jax.random.key(0), obs, noise=noise,
                         capture=CaptureOptions())
    assert out.actions.dtype == np.float32 and out.attention.dtype == np.float32
    np.testing.assert_allclose(np.asarray(out.actions), np.asarray(full.actions), rtol=0, atol=0.1)
    att = np.asarray(out.attention)
    np.testing.assert_allclose(att, np.asarray(full.attention), rtol=0, atol=0.02)
    np.testing.assert_array_equal(att == 0.0, np.asarray(full.attention) == 0.0)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
