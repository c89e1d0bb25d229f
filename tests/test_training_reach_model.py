"""reach-tiny, the small trained pi0 that ships with pi0viz: its task and training parts (action chunks, openpi's
flow-matching loss whose velocity is the sampler's, the position-code start, the gate a model must pass to ship),
its checkpoint, and its grounding claim checked on the shipped held-out scenes against the untrained model."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pi0viz.model import Pi0Config, init_params, sample_actions
from pi0viz.model.init import posemb_sincos_2d
from pi0viz.model.loss import flow_matching_loss, velocity
from pi0viz.model.pi0 import Observation
from pi0viz.policy.jax_policy import Policy
from pi0viz.policy.norm_stats import load_norm_stats
from pi0viz.policy.reach_model import (REACH_ASSET_ID, REACH_MODEL_DIR, heldout_scenes, initial_params,
                                       load_reach_policy, model_card, reach_config, reach_task_of, reach_transforms)
from pi0viz.policy.reach_task import (ACTION_UNIT_M, CLEARANCE_M, HOVER_M, OBJECT_TOP_M,
                                      approach_chunk, chunk_endpoint, hover_point, make_chunk, min_jerk_weights,
                                      reach_chunk, reached)


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


def test_the_closed_loop_reach_hovers_above_each_kinds_top() -> None:
    """The approach ends CLEARANCE_M above a tall object's top (the basket's rim at 14.7 cm) and HOVER_M above a
    short one's centre; success is measured to that point; the shipped min-jerk task keeps HOVER_M for every kind."""
    obj = np.array([0.0, 0.1, -0.005])
    assert np.isclose(hover_point(obj, "basket")[2] - obj[2], OBJECT_TOP_M["basket"] + CLEARANCE_M)
    assert np.isclose(hover_point(obj, "butter")[2] - obj[2], HOVER_M)
    assert np.isclose(hover_point(obj)[2] - obj[2], HOVER_M)
    pos = np.array([-0.2, -0.1, 0.3])
    for _ in range(12):  # replanned every 5 steps, read in the measured unit: it arrives and stays
        chunk = approach_chunk(pos, obj, label="basket")
        pos = chunk_endpoint(pos, chunk[:5], ACTION_UNIT_M)
    assert np.linalg.norm(pos - hover_point(obj, "basket")) < 0.005
    assert pos[2] - obj[2] > OBJECT_TOP_M["basket"] + 0.02  # the fingertips clear the rim
    assert reached(pos, obj, "basket", radius_m=0.005) and not reached(pos, obj, radius_m=0.09)  # not the 8 cm point
    np.testing.assert_array_equal(make_chunk("min_jerk", pos, obj, unit_m=0.05, label="basket"),
                                  reach_chunk(pos, obj, unit_m=0.05))
    with pytest.raises(ValueError, match="no height known for 'teapot'"):
        hover_point(obj, "teapot")


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


def test_ship_gate_refuses_a_model_that_does_not_use_the_prompt() -> None:
    from pi0viz.training.ship_reach import ship_gate

    good = {"error_cm": 6.0, "scene_mean_baseline_cm": 18.0,
            "best_cell": {"ratio": 5.0, "lift": 8.0, "lift_other": 2.0}}
    assert ship_gate(good) == []
    # what the model trained so far gives: looks at objects, not at the named one
    blind = {"error_cm": 22.0, "scene_mean_baseline_cm": 18.0,
             "best_cell": {"ratio": 3.1, "lift": 3.4, "lift_other": 2.9}}
    failed = ship_gate(blind)
    assert len(failed) == 2 and "prompt-blind" in failed[0] and "other objects" in failed[1]


def test_the_kept_warm_start_loads_under_the_current_config() -> None:
    """training_runs/reach_tiny_stage2 (the checkpoint to continue training from) still fits reach_config and
    runs as a LIBERO policy: a config change that breaks it fails here, not in the next training session."""
    from pathlib import Path

    from pi0viz.policy.reach_model import load_reach_policy

    policy = load_reach_policy(Path(__file__).resolve().parents[1] / "training_runs" / "reach_tiny_stage2")
    rng = np.random.default_rng(0)
    obs = {"observation/image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
           "observation/wrist_image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
           "observation/state": np.array([-0.15, 0.0, 0.26, 3.14, 0.0, -0.09, 0.02, -0.02]),
           "prompt": "reach the milk"}
    out = policy.infer(obs, return_bundle=True)
    assert out["actions"].shape == (10, 7) and np.isfinite(out["actions"]).all()
    assert out["attention_bundle"].attention.shape == (10, 4, 1, 1, 2, 11, 283)


def test_shipped_checkpoint_is_in_openpi_layout() -> None:
    from pi0viz.model.checkpoint import load_params

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
    """The shipped model and the untrained one it started from (same config, seed 0, same norm stats) on every
    example of the shipped held-out scenes."""
    from pi0viz.training.reach_eval import evaluate

    held = heldout_scenes()
    trained = load_reach_policy()
    untrained = Policy(initial_params(trained.config, 0), trained.config, reach_transforms(
        trained.config, trained.tokenizer, load_norm_stats(REACH_MODEL_DIR, REACH_ASSET_ID)))
    task = reach_task_of()  # its chunks are read in the unit and against the chunks it was trained on
    kw = {"unit_m": task["action_unit_m"], "chunk": task["chunk"] if task["chunk"] == "approach" else None}
    return held, evaluate(trained, held, held.examples, **kw), evaluate(untrained, held, held.examples, **kw)


def test_shipped_model_reaches_the_named_object(heldout_eval) -> None:
    """On held-out scenes the chunk goes to the named object: clearly better than an answer that ignores the
    prompt (toward the mean of the scene's objects), than chance at picking the object, and than untrained. A
    closed-loop model's chunk is the next 10 steps, so it is measured against the task's chunk from that pose."""
    held, trained, untrained = heldout_eval
    assert len(held) >= 10 and len(held.examples) >= 30
    chance = np.mean([1 / held.present[i].sum() for i, _ in held.examples])
    if trained.target_cm is not None:  # the closed-loop task
        assert trained.target_cm.mean() < 0.8 * trained.blind_target_cm.mean(), (trained.target_cm.mean(),
                                                                                  trained.blind_target_cm.mean())
        assert untrained.target_cm.mean() > 1.5 * trained.target_cm.mean()
        assert trained.nearest.mean() > 1.5 * chance, (trained.nearest.mean(), chance)
        return
    assert trained.error_cm.mean() < 0.8 * trained.scene_mean_cm.mean(), (trained.error_cm.mean(),
                                                                           trained.scene_mean_cm.mean())
    assert trained.nearest.mean() > 1.8 * chance, (trained.nearest.mean(), chance)
    assert untrained.error_cm.mean() > 1.5 * trained.error_cm.mean()


def test_shipped_model_looks_at_the_named_object(heldout_eval) -> None:
    """The grounding claim: in the model card's best (step, layer), the action tokens' attention on the named
    object's patches (lift over its area share) is at least 3x the untrained model's there, and 1.5x its lift on
    the scene's other objects."""
    _, trained, untrained = heldout_eval
    best = model_card()["heldout"]["best_cell"]
    d, l = best["step"], best["layer"]
    lift = np.nanmean(trained.lift[:, 0, d, l])
    base = np.nanmean(untrained.lift[:, 0, d, l])
    other = np.nanmean(trained.lift_other[:, 0, d, l])
    assert lift >= 3 * base, (lift, base)
    assert lift >= 1.5 * other, (lift, other)
    # and the card's figure over all held-out examples agrees with these within noise
    assert abs(lift - best["lift"]) < 0.35 * best["lift"], (lift, best["lift"])


def test_model_card_states_figures_that_pass_the_gate() -> None:
    from pi0viz.training.ship_reach import ship_gate

    h = model_card()["heldout"]
    assert ship_gate(h) == [] and h["examples"] >= 500


def _reach_run(folder, episodes: int, successes: int, near: int, pushed: int):
    """A reach sweep's results.json as pi0viz.sweep.results writes it (the fields the closed-loop gate reads)."""
    import json

    folder.mkdir(parents=True)
    rows = [{"object": "basket", "episodes": episodes, "successes": successes, "near_at_end": near, "pushed": pushed,
             "success_rate": successes / episodes}]
    total = {"planned": episodes, "episodes": episodes, "successes": successes, "success_rate": successes / episodes}
    (folder / "results.json").write_text(json.dumps({"tasks": [], "objects": rows, "total": total}))
    return folder


def test_the_closed_loop_gate_reads_three_reach_runs(tmp_path) -> None:
    from pi0viz.training.ship_reach import closed_loop_figures, closed_loop_gate

    model = closed_loop_figures(_reach_run(tmp_path / "m", 50, 47, 40, 5))
    untrained = closed_loop_figures(_reach_run(tmp_path / "u", 50, 5, 0, 4))
    blind = closed_loop_figures(_reach_run(tmp_path / "b", 50, 15, 10, 2))
    assert model["success_rate"] == 0.94 and model["near_at_end"] == 0.8 and model["pushed"] == 0.1
    assert closed_loop_gate(model, untrained, blind) == []
    weak = closed_loop_figures(_reach_run(tmp_path / "w", 50, 40, 20, 30))
    failed = closed_loop_gate(weak, untrained, dict(blind, success_rate=0.7))
    assert any("success 80 % is below 90 %" in f for f in failed)
    assert any("above the prompt-blind baseline's 70 %" in f for f in failed)
    assert any("ends near the target in 40 %" in f for f in failed) and any("pushed in 60 %" in f for f in failed)
    assert not any("untrained" in f for f in failed)  # 80 % is 70 points above the untrained 10 %
    assert any("expected the same held-out episodes" in f
               for f in closed_loop_gate(model, dict(untrained, episodes=49), blind))
    with pytest.raises(ValueError, match="no results.json; expected a finished `pi0viz sweep --suite reach` run"):
        closed_loop_figures(tmp_path / "nothing")


LOOP_DIR = Path(__file__).resolve().parents[1] / "training_runs" / "reach_tiny_loop"


def test_the_closed_loop_checkpoint_states_figures_that_pass_both_gates() -> None:
    """training_runs/reach_tiny_loop (the closed-loop reach-tiny, docs/reach_tiny.md): its card holds the held-out
    figures of its own task and the three reach sweeps it passed, and it loads as a policy of the approach task."""
    from pi0viz.training.ship_reach import closed_loop_gate, ship_gate

    card = model_card(LOOP_DIR)
    assert card["task"] == {"chunk": "approach", "action_unit_m": ACTION_UNIT_M} == reach_task_of(LOOP_DIR)
    assert ship_gate(card["heldout"]) == [] and card["heldout"]["examples"] >= 500
    loop = card["closed_loop"]
    assert closed_loop_gate(loop["model"], loop["untrained"], loop["prompt_blind"]) == []
    assert loop["model"]["episodes"] >= 50 and loop["model"]["success_rate"] >= 0.9


def test_the_closed_loop_checkpoint_steers_and_looks_at_the_named_object_on_the_package_scenes() -> None:
    """Open loop on the package's held-out scenes (63 examples, the arm at home, not its training distribution):
    its next 10 steps match the task's approach chunk toward the named object better than the approach toward the
    scene's mean hover point and than its untrained start, and at its card's best cell its action tokens look at
    the named object (lift >= 3x the untrained model's there and 1.5x the other objects')."""
    from pi0viz.training.reach_eval import evaluate
    from pi0viz.training.ship_reach import MAX_ERROR_VS_BLIND

    held = heldout_scenes()
    policy = load_reach_policy(LOOP_DIR)
    untrained = Policy(initial_params(policy.config, 0), policy.config, reach_transforms(
        policy.config, policy.tokenizer, load_norm_stats(LOOP_DIR, REACH_ASSET_ID)))
    kw = {"unit_m": ACTION_UNIT_M, "chunk": "approach"}
    trained, blank = evaluate(policy, held, held.examples, **kw), evaluate(untrained, held, held.examples, **kw)
    assert trained.target_cm.mean() < MAX_ERROR_VS_BLIND * trained.blind_target_cm.mean(), (
        trained.target_cm.mean(), trained.blind_target_cm.mean())
    assert blank.target_cm.mean() > 1.5 * trained.target_cm.mean()
    best = model_card(LOOP_DIR)["heldout"]["best_cell"]
    d, l = best["step"], best["layer"]
    lift = np.nanmean(trained.lift[:, 0, d, l])
    assert lift >= 3 * np.nanmean(blank.lift[:, 0, d, l]) and lift >= 1.5 * np.nanmean(trained.lift_other[:, 0, d, l])
