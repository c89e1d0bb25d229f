"""pi0.5 in pi0viz's JAX model, against openpi's own recorded call on a tiny pi0.5 checkpoint
(tests/data/openpi_pi05_tiny, see its README), and structural facts on inputs built here.

Tolerances are the README's: actions atol 1e-4, attention atol 2e-5, masked entries exactly 0.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from openpi_reference import observation_of

from pi0viz.model import (
    CaptureOptions,
    Observation,
    Pi0Config,
    embed_prefix,
    load_params,
    sample_actions,
)
from pi0viz.model import pi0 as pi0_mod

DATA = Path(__file__).parent / "data" / "openpi_pi05_tiny"
CONFIG = Pi0Config.tiny(pi05=True, action_horizon=10, max_token_len=200)
H, P = 10, 968  # action tokens, prefix tokens (3 x 256 image + 200 prompt slots)
RIGHT_WRIST = slice(512, 768)
PROMPT = slice(768, 968)


@pytest.fixture(scope="module")
def params():
    return load_params(DATA / "params")


@pytest.fixture(scope="module")
def case():
    return dict(np.load(DATA / "case_A.npz", allow_pickle=False))


@pytest.fixture(scope="module")
def out_a(params, case):
    return sample_actions(params, CONFIG, jax.random.key(0), observation_of(case), num_steps=int(case["num_steps"]),
                          noise=case["noise"], capture=CaptureOptions())


def test_config_matches_the_reference():
    assert (CONFIG.pi05, CONFIG.prefix_len, CONFIG.suffix_len, CONFIG.num_state_tokens) == (True, P, H, 0)
    assert Pi0Config(pi05=True).max_token_len == 200 and Pi0Config().max_token_len == 48  # openpi's defaults


def test_case_a_matches_openpi(out_a, case):
    np.testing.assert_allclose(np.asarray(out_a.actions), case["actions"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out_a.diffusion_times), case["timesteps"])
    att = np.asarray(out_a.attention)
    assert att.shape == (10, 4, 1, 1, 8, H, P + H)  # [D, L, B, K, G, Q = H, S = 768 + 200 + H]
    steps = case["attention_steps"]
    ref = case["attention_probs"]
    np.testing.assert_allclose(att[steps], ref, rtol=0, atol=2e-5)
    mask = case["suffix_attn_mask"]  # [B, Q, S]
    masked = np.broadcast_to(~mask[None, None, :, None, None], att.shape)
    assert masked.sum() == 10 * 4 * 8 * H * (P - 828)  # every padded prompt key of every row, step and layer
    assert np.all(att[masked] == 0.0)
    np.testing.assert_array_equal(att[steps] == 0.0, ref == 0.0)


def test_case_a_intermediates(params, case):
    """Prefix tokens, the adaRMS conditioning and the suffix tokens of every step, so a mismatch points at a stage."""
    obs = observation_of(case)
    obs = Observation(**{k: jax.tree.map(jnp.asarray, v) for k, v in vars(obs).items()})
    tokens, mask, _ = jax.jit(lambda p, o: embed_prefix(p, CONFIG, Observation(**o)))(params, vars(obs))
    np.testing.assert_allclose(np.asarray(tokens), case["prefix_tokens"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mask), case["prefix_mask"])
    embed_suffix = jax.jit(pi0_mod.embed_suffix, static_argnums=1)
    for step, t in enumerate(case["timesteps"]):
        suffix, smask, ar, cond = embed_suffix(params, CONFIG, obs.state, jnp.asarray(case["x_t"][step]),
                                               jnp.full((1,), t))
        np.testing.assert_allclose(np.asarray(suffix), case["suffix_tokens"][step], rtol=0, atol=1e-5)
        # sin/cos of t * 2 pi / 4e-3 (args up to ~1571) in float32: XLA's fused and unfused sin differ by ~1e-5
        # here (the README's float64 re-derivation differs from openpi by 1.7e-5), so 5e-5.
        np.testing.assert_allclose(np.asarray(cond), case["adarms_cond"][step], rtol=0, atol=5e-5)
    np.testing.assert_array_equal(np.asarray(ar), case["suffix_ar_mask"])
    np.testing.assert_array_equal(np.asarray(smask), case["suffix_mask"])


# ---- inputs built here: batch 2, a masked camera, prompts of 35 and 120 tokens --------------------------------

PROMPT_LEN = (35, 120)


@pytest.fixture(scope="module")
def obs2(case) -> Observation:
    """Element 0: case A's cameras, a 35-token prompt. Element 1: flipped images, the right wrist masked (zeros
    image, as LIBERO), a 120-token prompt. Pad slots hold token ids that are NOT 0, to show the mask rules."""
    keys = [str(k) for k in case["image_keys"]]
    images = {k: np.concatenate([case[f"image/{k}"], case[f"image/{k}"][:, ::-1]]) for k in keys}
    images["right_wrist_0_rgb"][1] = -1.0
    masks = {k: np.array([True, k != "right_wrist_0_rgb"]) for k in keys}
    vocab = np.unique(case["tokenized_prompt"])
    rng = np.random.default_rng(5)
    prompt = rng.choice(vocab, size=(2, 200)).astype(np.int32)
    prompt[:, 0] = 2  # BOS
    prompt_mask = np.arange(200)[None, :] < np.array(PROMPT_LEN)[:, None]
    state = rng.normal(size=(2, 32)).astype(np.float32)
    return Observation(images=images, image_masks=masks, state=state, tokenized_prompt=prompt,
                       tokenized_prompt_mask=prompt_mask)


@pytest.fixture(scope="module")
def noise2():
    return np.asarray(jax.random.normal(jax.random.key(7), (2, H, 32)))


@pytest.fixture(scope="module")
def out2(params, obs2, noise2):
    return sample_actions(params, CONFIG, jax.random.key(0), obs2, noise=noise2, capture=CaptureOptions())


def _row(obs: Observation, i: int) -> Observation:
    return Observation(images={k: v[i:i + 1] for k, v in obs.images.items()},
                       image_masks={k: v[i:i + 1] for k, v in obs.image_masks.items()},
                       state=obs.state[i:i + 1], tokenized_prompt=obs.tokenized_prompt[i:i + 1],
                       tokenized_prompt_mask=obs.tokenized_prompt_mask[i:i + 1])


def test_masked_camera_and_pads_get_exactly_zero(out2):
    att = np.asarray(out2.attention)  # [D, L, 2, 1, 8, H, S]
    assert att.shape == (10, 4, 2, 1, 8, H, P + H)
    assert np.all(att[:, :, 1, ..., RIGHT_WRIST] == 0.0)  # masked camera of element 1
    assert np.all(att[:, :, 0, ..., RIGHT_WRIST] > 0.0)  # the same camera is live in element 0
    for b, n in enumerate(PROMPT_LEN):
        prompt = att[:, :, b, ..., PROMPT]
        assert np.all(prompt[..., n:] == 0.0), b  # pad slots
        assert np.all(prompt[..., :n] > 0.0), b  # real prompt tokens
    assert np.all(att[..., P:] > 0.0)  # every action token sees every action token (no block-causal split)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=0, atol=1e-5)


def test_batch_elements_are_independent(params, obs2, noise2, out2):
    for i in range(2):
        one = sample_actions(params, CONFIG, jax.random.key(0), _row(obs2, i), noise=noise2[i:i + 1],
                             capture=CaptureOptions())
        np.testing.assert_allclose(np.asarray(out2.actions)[i:i + 1], np.asarray(one.actions), rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out2.attention)[:, :, i:i + 1], np.asarray(one.attention),
                                   rtol=0, atol=1e-6)


def test_actions_ignore_state_and_pad_token_ids(params, obs2, noise2, out2):
    """pi0.5 has no state token: another state gives bitwise the same actions. Pad slot ids are masked out."""
    other = Observation(**{**vars(obs2), "state": obs2.state * -3.0 + 1.0,
                           "tokenized_prompt": np.where(obs2.tokenized_prompt_mask, obs2.tokenized_prompt, 0)})
    again = sample_actions(params, CONFIG, jax.random.key(0), other, noise=noise2)
    np.testing.assert_array_equal(np.asarray(again.actions), np.asarray(out2.actions))
    # ...while a real prompt token and an image do reach the actions.
    changed = obs2.tokenized_prompt.copy()
    changed[:, 5] = np.where(changed[:, 5] == 108, 90, 108)
    moved = sample_actions(params, CONFIG, jax.random.key(0), Observation(**{**vars(obs2),
                           "tokenized_prompt": changed}), noise=noise2)
    assert np.all(np.abs(np.asarray(moved.actions) - np.asarray(out2.actions)).max(axis=(1, 2)) > 1e-4)


def test_capture_never_changes_actions_and_reductions_are_slices(params, obs2, noise2, out2):
    plain = sample_actions(params, CONFIG, jax.random.key(0), obs2, noise=noise2)
    assert plain.attention is None
    np.testing.assert_array_equal(np.asarray(plain.actions), np.asarray(out2.actions))  # bitwise
    opts = CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16")
    small = sample_actions(params, CONFIG, jax.random.key(0), obs2, noise=noise2, capture=opts)
    np.testing.assert_array_equal(np.asarray(small.actions), np.asarray(out2.actions))
    full = np.asarray(out2.attention)
    want = full[..., :P].max(axis=(3, 4), keepdims=True).astype(np.float16)  # no state row to drop in pi0.5
    assert small.attention.shape == (10, 4, 2, 1, 1, H, P)
    np.testing.assert_array_equal(np.asarray(small.attention), want)
