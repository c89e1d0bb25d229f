"""reach-tiny, the small trained pi0 that ships with pi0viz: its checkpoint, its task, and its grounding claim
checked on the shipped held-out scenes against the untrained model it started from."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pi0viz.model import Pi0Config, init_params, sample_actions
from pi0viz.model.checkpoint import load_params
from pi0viz.model.init import posemb_sincos_2d
from pi0viz.model.loss import flow_matching_loss, velocity
from pi0viz.model.pi0 import Observation
from pi0viz.policy.jax_policy import Policy
from pi0viz.policy.norm_stats import load_norm_stats
from pi0viz.policy.reach_model import (REACH_ASSET_ID, REACH_MODEL_DIR, heldout_scenes, initial_params,
                                       load_reach_policy, model_card, policy_kwargs, reach_config)
from pi0viz.training.reach_eval import evaluate
from pi0viz.policy.reach_task import HOVER_M, chunk_endpoint, min_jerk_weights, reach_chunk


def test_reach_chunk_ends_hovering_over_the_object() -> None:
    eef, obj = np.array([-0.15, 0.0, 0.26]), np.array([0.05, -0.2, 0.035])
    chunk = reach_chunk(eef, obj)
    assert chunk.shape == (10, 7)
    np.testing.assert_allclose(chunk_endpoint(eef, chunk), obj + [0, 0, HOVER_M], atol=1e-6)
    assert (chunk[:, 3:6] == 0).all() and (chunk[:, 6] == -1).all()
    w = min_jerk_weights(10)
    np.testing.assert_allclose(w.sum(), 1.0)
    np.testing.assert_allclose(w, w[::-1], atol=1e-12)  # slow, fast, slow
    assert w[4] > 3 * w[0]


@pytest.mark.parametrize("pi05", [False, True])
def test_training_pass_velocity_equals_the_sampler_step(pi05: bool) -> None:
    """The loss's joint prefix+suffix pass gives the velocity the cached sampler integrates (same masks and
    positions): one Euler step from t = 1 moves x by -v."""
    cfg = Pi0Config.tiny(pi05=pi05, action_horizon=10, action_dim=8, max_token_len=16, vocab_size=300)
    params = init_params(cfg, jax.random.key(1))
    rng = np.random.default_rng(0)
    obs = Observation(
        images={k: jnp.asarray(rng.uniform(-1, 1, (2, 224, 224, 3)), jnp.float32) for k in cfg.image_keys},
        image_masks={k: jnp.array([True, k != "right_wrist_0_rgb"]) for k in cfg.image_keys},
        state=jnp.asarray(rng.normal(size=(2, 8)), jnp.float32),
        tokenized_prompt=jnp.asarray(rng.integers(0, 300, (2, 16)), jnp.int32),
        tokenized_prompt_mask=jnp.asarray(np.arange(16)[None] < np.array([[5], [9]])))
    x1 = jnp.asarray(rng.normal(size=(2, 10, 8)), jnp.float32)
    stepped = sample_actions(params, cfg, jax.random.key(0), obs, num_steps=1, noise=x1).actions
    v = velocity(params, cfg, obs, x1, jnp.ones(2))
    np.testing.assert_allclose(np.asarray(v), np.asarray(x1 - stepped), atol=2e-5)
    loss = flow_matching_loss(params, cfg, jax.random.key(3), obs, x1)
    assert loss.shape == (2, 10) and bool(jnp.isfinite(loss).all())


def test_posemb_sincos_2d_codes_row_and_column() -> None:
    code = posemb_sincos_2d(16, 32)[0].reshape(16, 16, 32)
    # the first quarter depends on the column only, the third on the row only
    np.testing.assert_allclose(code[3, :, :8], code[9, :, :8])
    np.testing.assert_allclose(code[:, 5, 16:24], code[:, 11, 16:24])
    assert np.unique(code.reshape(256, 32), axis=0).shape[0] == 256


def test_shipped_checkpoint_is_in_openpi_layout() -> None:
    card = model_card()
    config = reach_config(1536)
    assert card["config"]["action_horizon"] == config.action_horizon == 10
    params = load_params(REACH_MODEL_DIR / "params", config=config, dtype="float32")
    n = sum(x.size for x in jax.tree.leaves(params))
    assert 0.3e6 < n < 1e6
    stats = load_norm_stats(REACH_MODEL_DIR, REACH_ASSET_ID)
    assert len(stats["state"]["mean"]) == 8 and len(stats["actions"]["mean"]) == 7
    size = sum(p.stat().st_size for p in REACH_MODEL_DIR.rglob("*") if p.is_file())
    assert size < 8e6, f"reach-tiny ships {size / 1e6:.1f} MB"


@pytest.fixture(scope="module")
def heldout_eval():
    held = heldout_scenes()
    trained = load_reach_policy()
    untrained = Policy(initial_params(trained.config, 0), trained.config, trained.tokenizer,
                       load_norm_stats(REACH_MODEL_DIR, REACH_ASSET_ID), **policy_kwargs())
    return held, evaluate(trained, held, held.examples), evaluate(untrained, held, held.examples)


def test_shipped_model_reaches_the_named_object(heldout_eval) -> None:
    """On held-out scenes the chunk ends near the named object, clearly better than any answer that ignores the
    prompt (the mean position of the scene's objects) and than the untrained model."""
    held, trained, untrained = heldout_eval
    assert len(held) == 10 and len(held.examples) >= 40
    chance = np.mean([1 / held.present[i].sum() for i, _ in held.examples])
    assert trained.error_cm.mean() < 0.6 * trained.scene_mean_cm.mean(), (trained.error_cm.mean(),
                                                                           trained.scene_mean_cm.mean())
    assert trained.nearest.mean() > 3 * chance
    assert untrained.error_cm.mean() > 2 * trained.error_cm.mean()


def test_shipped_model_looks_at_the_named_object(heldout_eval) -> None:
    """The grounding claim: in the model card's best (step, layer), the action tokens' attention on the named
    object's patches (lift over its area share) is at least 3x the untrained model's there, and above its lift on
    the other objects of the scene."""
    _, trained, untrained = heldout_eval
    best = model_card()["heldout"]["best_cell"]
    d, l = best["step"], best["layer"]
    lift = np.nanmean(trained.lift[:, 0, d, l])
    base = np.nanmean(untrained.lift[:, 0, d, l])
    other = np.nanmean(trained.lift_other[:, 0, d, l])
    assert lift >= 3 * base, (lift, base)
    assert lift > 2 * other, (lift, other)
    # and the card's figure over all held-out scenes agrees with these ten within noise
    assert abs(lift - best["lift"]) < 0.35 * best["lift"], (lift, best["lift"])


def test_model_card_states_the_heldout_figures() -> None:
    h = model_card()["heldout"]
    assert h["error_cm"] < 0.6 * h["scene_mean_baseline_cm"]
    assert h["best_cell"]["ratio"] >= 3
    json.dumps(h)


@pytest.mark.slow
def test_training_loop_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path) -> None:
    """The training script's loop (optax AdamW on the flow-matching loss) on the shipped held-out scenes, briefly:
    the loss falls, and the checkpoint it writes loads as a reach-tiny policy."""
    import shutil

    from pi0viz.training.train_reach import train

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    shutil.copy(REACH_MODEL_DIR / "heldout_scenes.npz", scenes / "task_0_seed_0.npz")
    shutil.copy(REACH_MODEL_DIR / "heldout_scenes.npz", scenes / "task_0_seed_1.npz")
    result = train(scenes, tmp_path / "ckpt", steps=60, batch=4, lr=1e-3, seed=0, solo_until=0.0, eval_every=60,
                   eval_examples=4)
    losses = result["losses"]
    assert np.mean(losses[-15:]) < 0.7 * np.mean(losses[:15]), (losses[:15], losses[-15:])
    policy = load_reach_policy(tmp_path / "ckpt")
    out = policy.infer(heldout_scenes().observation(0, 0))
    assert out["actions"].shape == (10, 7) and np.isfinite(out["actions"]).all()
