"""pi0viz.model against openpi itself: the tiny openpi checkpoint and its recorded sample_actions calls.

tests/data/openpi_pi0_tiny holds an orbax checkpoint written by openpi and case_*.npz files with the inputs,
noise, intermediates, actions and attention of openpi's jitted sample_actions (see that folder's README).
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

DATA = Path(__file__).parent / "data" / "openpi_pi0_tiny"
CASES = sorted(p for p in DATA.glob("case_*.npz") if not p.stem.endswith("_logits"))
CONFIG = Pi0Config.tiny()


@pytest.fixture(scope="module")
def params():
    return load_params(DATA / "params")


def test_reference_cases_present():
    assert CASES, f"no case_*.npz in {DATA}"


@pytest.mark.parametrize("case_path", CASES, ids=[p.stem for p in CASES])
def test_matches_openpi(params, case_path):
    case = np.load(case_path, allow_pickle=False)
    out = sample_actions(params, CONFIG, jax.random.key(0), observation_of(case), num_steps=int(case["num_steps"]),
                         noise=case["noise"], capture=CaptureOptions())
    actions = np.asarray(out.actions)
    np.testing.assert_allclose(actions, case["actions"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.diffusion_times), case["timesteps"])

    steps = case["attention_steps"]
    att = np.asarray(out.attention)[steps]
    ref = case["attention_probs"]
    assert att.shape == ref.shape, (att.shape, ref.shape)
    np.testing.assert_allclose(att, ref, rtol=0, atol=2e-5)
    # Masked keys (padding, absent cameras, the state row's view of the actions) are exactly 0 in both.
    mask = case["suffix_attn_mask"]  # [B, Q, S]
    masked = np.broadcast_to(~mask[None, None, :, None, None], att.shape)
    assert masked.any()
    assert np.all(att[masked] == 0.0)
    np.testing.assert_array_equal(att == 0.0, ref == 0.0)

    logits_path = case_path.with_name(case_path.stem + "_logits.npz")
    if logits_path.exists():  # optional companion file: pre-softmax scores
        out_l = sample_actions(params, CONFIG, jax.random.key(0), observation_of(case), noise=case["noise"],
                               capture=CaptureOptions(logits=True))
        ref_l = np.load(logits_path, allow_pickle=False)["attention_logits"]
        ours = np.asarray(out_l.attention_logits)[steps]
        np.testing.assert_array_equal(ours <= -1e38, ref_l <= -1e38)
        np.testing.assert_allclose(ours[ref_l > -1e38], ref_l[ref_l > -1e38], rtol=0, atol=1e-3)


@pytest.mark.parametrize("case_path", CASES, ids=[p.stem for p in CASES])
def test_intermediates_match_openpi(params, case_path):
    """Prefix embedding and the Euler trajectory, so a mismatch points at the stage that broke."""
    case = np.load(case_path, allow_pickle=False)
    obs = observation_of(case)
    obs = Observation(**{k: jax.tree.map(jnp.asarray, v) for k, v in vars(obs).items()})
    tokens, mask, _ = embed_prefix(params, CONFIG, obs)
    np.testing.assert_allclose(np.asarray(tokens), case["prefix_tokens"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mask), case["prefix_mask"])
    np.testing.assert_array_equal(pi0_mod.diffusion_times(int(case["num_steps"])), case["timesteps"])
    # One Euler step from the recorded x_t of each step reproduces openpi's x_{t+1} trajectory.
    x, dt = case["x_t"], np.float32(-1.0 / int(case["num_steps"]))
    np.testing.assert_allclose(x[1:], x[:-1] + dt * case["v_t"][:-1], rtol=0, atol=1e-5)


def test_batch_of_two_with_masked_camera_matches_single_runs(params):
    """Batch elements are independent: [case A, case A with the right wrist masked] reproduces case A in row 0,
    and row 1 gives exactly 0 attention to the masked camera's 256 keys."""
    case = np.load(CASES[0], allow_pickle=False)
    obs = observation_of(case)
    two = Observation(
        images={k: np.concatenate([v, v[:, ::-1]]) for k, v in obs.images.items()},
        image_masks={k: np.concatenate([v, v if k != "right_wrist_0_rgb" else ~v]) for k, v in obs.image_masks.items()},
        state=np.concatenate([obs.state, obs.state + 0.1]),
        tokenized_prompt=np.concatenate([obs.tokenized_prompt] * 2),
        tokenized_prompt_mask=np.concatenate([obs.tokenized_prompt_mask] * 2),
    )
    noise = np.concatenate([case["noise"], case["noise"][:, ::-1]])
    out = sample_actions(params, CONFIG, jax.random.key(0), two, noise=noise, capture=CaptureOptions())
    np.testing.assert_allclose(np.asarray(out.actions)[:1], case["actions"], rtol=0, atol=1e-4)
    att = np.asarray(out.attention)
    steps = case["attention_steps"]
    np.testing.assert_allclose(att[steps][:, :, :1], case["attention_probs"], rtol=0, atol=2e-5)
    assert np.all(att[:, :, 1, ..., 512:768] == 0.0)  # right wrist of element 1
    assert np.all(att[:, :, 0, ..., 512:768] > 0.0)  # still valid in element 0
