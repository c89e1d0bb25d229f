"""Knockouts (pi0viz.causal): removing prefix keys from the attention is exact (no keys removed: the same actions,
bit for bit; removed keys get no attention where, and only where, the knockout says), and on reach-tiny's shipped
held-out scenes the chunk depends on the patches in the order docs/causal.md measured: the named object >> the
top of the action tokens' map >> random and bottom patches, and mostly through the prefix's own attention."""

from __future__ import annotations

import numpy as np
import pytest

from pi0viz.causal.knockout import (Knockout, camera_keys, mean_se, patch_keys, prompt_keys, ranked_keys,
                                    random_keys, sample_knockouts, stack_knockouts, take_observation)
from pi0viz.core.capture_options import CaptureOptions
from pi0viz.model.pi0 import sample_actions

# Examples of the shipped held-out scenes the ordering test runs on: the first 32 (10 scenes), ~20 s on 2 cores.
# Measured on them (docs/causal.md, `python -m pi0viz.causal.reach --examples 32`), chunk end moves in cm, mean
# +- standard error: named object 24.8 +- 1.8, top-k 9.0 +- 1.7, top-k without the object 2.6 +- 0.4, random
# 0.5 +- 0.1, bottom-k 0.4 +- 0.1; named object from the prefix queries only 22.8 +- 1.9, from the action
# expert's queries only 2.1 +- 0.5.
ORDERING_EXAMPLES = 32


@pytest.fixture(scope="module")
def reach():
    from pi0viz.policy.reach_model import heldout_scenes, load_reach_policy
    from pi0viz.training.reach_eval import batch_observation

    policy, scenes = load_reach_policy(), heldout_scenes()
    examples = scenes.examples[:4]
    obs = batch_observation(policy, scenes, examples)
    noise = np.random.default_rng(0).standard_normal((4, 10, 8)).astype(np.float32)
    return policy, scenes, examples, obs, noise


def test_key_sets_address_the_prefix_layout(reach) -> None:
    cfg = reach[0].config  # one camera of 256 patches, then 16 prompt slots
    assert camera_keys(cfg, "base_0_rgb")[:256].all() and not camera_keys(cfg, "base_0_rgb")[256:].any()
    assert prompt_keys(cfg)[256:].all() and prompt_keys(cfg, [2]).sum() == 1 and prompt_keys(cfg, [2])[258]
    grid = np.zeros((16, 16), bool)
    grid[3, 4] = True
    assert np.flatnonzero(patch_keys(cfg, "base_0_rgb", grid)).tolist() == [3 * 16 + 4]
    scores = np.arange(256.0)
    assert np.flatnonzero(ranked_keys(cfg, "base_0_rgb", scores, 3)).tolist() == [253, 254, 255]
    assert np.flatnonzero(ranked_keys(cfg, "base_0_rgb", scores, 2, top=False)).tolist() == [0, 1]
    skip = np.zeros(256, bool)
    skip[255] = True
    assert np.flatnonzero(ranked_keys(cfg, "base_0_rgb", scores, 2, exclude=skip)).tolist() == [253, 254]
    drawn = random_keys(cfg, "base_0_rgb", 11, np.random.default_rng(0), exclude=skip)
    assert drawn.sum() == 11 and not drawn[255] and not drawn[256:].any()
    with pytest.raises(ValueError, match="not one of the model's cameras"):
        camera_keys(cfg, "left_wrist_0_rgb")
    with pytest.raises(ValueError, match="route"):
        Knockout("x", drawn, route="queries")
    stacked = stack_knockouts([Knockout("a", drawn, "prefix", layer=1), Knockout("b", drawn, "expert")], 4)
    assert stacked.prefix_layers.tolist() == [[False, True, False, False], [False] * 4]
    assert stacked.expert_layers.tolist() == [[False] * 4, [True] * 4]
    assert mean_se(np.array([1.0, 3.0])) == {"mean": 2.0, "se": 1.0}


def test_no_keys_removed_gives_the_unmodified_actions_bit_for_bit(reach) -> None:
    """An all-False knockout, in every route, is the sampler without a knockout (same batch, same noise); so is a
    knockout in the prefix pass's last layer only (its output is never read: the cache holds that layer's input)."""
    policy, _, _, obs, noise = reach
    cfg = policy.config
    plain = np.asarray(sample_actions(policy.params, cfg, None, obs, noise=noise).actions)
    none = np.zeros(cfg.prefix_len, bool)
    for route in ("all", "prefix", "expert"):
        knocked, _ = sample_knockouts(policy.params, cfg, obs, [Knockout("none", none, route)] * 4, noise, batch=4)
        np.testing.assert_array_equal(knocked, plain)
    last = [Knockout("last", camera_keys(cfg, "base_0_rgb"), "prefix", layer=cfg.llm.depth - 1)] * 4
    np.testing.assert_array_equal(sample_knockouts(policy.params, cfg, obs, last, noise, batch=4)[0], plain)
    # and removing the whole camera does change them
    gone = [Knockout("camera", camera_keys(cfg, "base_0_rgb"))] * 4
    assert np.abs(sample_knockouts(policy.params, cfg, obs, gone, noise, batch=4)[0] - plain).max() > 1e-2


def test_removed_keys_get_no_attention_where_the_knockout_says(reach) -> None:
    """Captured attention of both passes: a key removed from the expert's queries in layer 2 gets exactly zero
    attention from the action tokens in layer 2 and some in the other layers, and the prefix pass is untouched;
    removed from the prefix queries, the reverse."""
    policy, _, _, obs, noise = reach
    cfg = policy.config
    keys = patch_keys(cfg, "base_0_rgb", np.arange(256) < 64)  # the top quarter of the image
    capture = CaptureOptions(prefix=True)
    one = take_observation(obs, np.zeros(2, int))
    conds = [Knockout("expert", keys, "expert", layer=2), Knockout("prefix", keys, "prefix", layer=2)]
    kn = stack_knockouts(conds, cfg.llm.depth)
    out = sample_actions(policy.params, cfg, None, one, noise=noise[:2], capture=capture, knockout=kn)
    suffix = np.asarray(out.attention)[..., :cfg.prefix_len]  # [D, L, B, K, G, Q, P]
    valid = np.concatenate([np.ones(256, bool), np.asarray(one.tokenized_prompt_mask[0])])
    prefix = np.asarray(out.prefix_attention)[..., valid, :]  # [L, B, K, G, P', P]: the valid queries' rows
    assert (suffix[:, 2, 0][..., keys] == 0).all() and (suffix[:, 1, 0][..., keys] > 0).all()
    assert (prefix[:, 0][..., keys] > 0).all()
    assert (prefix[2, 1][..., keys] == 0).all() and (prefix[1, 1][..., keys] > 0).all()
    assert (suffix[:, :, 1][..., keys] > 0).all()


def test_query_sets_remove_keys_from_the_chosen_prefix_queries_only(reach) -> None:
    """Knockout.queries: the prompt hidden from the image tokens' queries in the prefix pass gets exactly zero
    attention from the image rows and some from the prompt rows and the action tokens; every query chosen is the
    every-query form bit for bit."""
    from pi0viz.causal.knockout import image_queries

    policy, _, _, obs, noise = reach
    cfg = policy.config
    keys = prompt_keys(cfg)
    every = [Knockout("all", keys, "prefix")] * 4
    chosen_all = [Knockout("all, as a query set", keys, "prefix", queries=np.ones(cfg.prefix_len, bool))] * 4
    np.testing.assert_array_equal(sample_knockouts(policy.params, cfg, obs, chosen_all, noise, batch=4)[0],
                                  sample_knockouts(policy.params, cfg, obs, every, noise, batch=4)[0])
    one = take_observation(obs, np.zeros(2, int))
    conds = [Knockout("image queries", keys, "prefix", queries=image_queries(cfg)), Knockout("none", keys * False)]
    out = sample_actions(policy.params, cfg, None, one, noise=noise[:2], capture=CaptureOptions(prefix=True),
                         knockout=stack_knockouts(conds, cfg.llm.depth))
    prefix = np.asarray(out.prefix_attention)  # [L, B, K, G, P (queries), P (keys)]
    valid = np.asarray(one.tokenized_prompt_mask[0])
    prompt_cols = np.flatnonzero(keys)[valid]
    assert (prefix[:, 0, :, :, :256][..., prompt_cols] == 0).all()  # image rows cannot read the prompt
    prompt_rows = 256 + np.flatnonzero(valid)
    assert (prefix[:, 0, :, :, prompt_rows][..., prompt_cols] > 0).all()  # prompt rows still can
    assert (prefix[:, 1, :, :, :256][..., prompt_cols] > 0).all()  # the other row is untouched
    suffix = np.asarray(out.attention)[..., :cfg.prefix_len]
    assert (suffix[:, :, 0][..., prompt_cols] > 0).all()  # the action expert still reads the prompt


def test_knockout_shapes_are_checked(reach) -> None:
    policy, _, _, obs, noise = reach
    kn = stack_knockouts([Knockout("x", np.zeros(10, bool))] * 4, policy.config.llm.depth)
    with pytest.raises(ValueError, match="knockout keys has shape"):
        sample_actions(policy.params, policy.config, None, obs, noise=noise, knockout=kn)
    with pytest.raises(ValueError, match="one of each per condition"):
        sample_knockouts(policy.params, policy.config, obs, [Knockout("x", np.zeros(272, bool))] * 3, noise)


@pytest.fixture(scope="module")
def study():
    from pi0viz.causal.reach import reach_knockout_study
    from pi0viz.policy.reach_model import heldout_scenes

    scenes = heldout_scenes()
    return reach_knockout_study(scenes=scenes, examples=scenes.examples[:ORDERING_EXAMPLES], pixels=True)


def _gap(a: dict, b: dict) -> float:
    """How many standard errors a's mean lies above b's (errors combined as if independent)."""
    return (a["mean"] - b["mean"]) / np.hypot(a["se"], b["se"])


def test_the_named_object_moves_the_chunk_more_than_the_top_of_the_map_more_than_random(study) -> None:
    c = {name: v["shift_cm"] for name, v in study["conditions"].items()}
    named, top, rand, bottom = c["named object"], c["top-k"], c["random"], c["bottom-k"]
    assert study["examples"] == ORDERING_EXAMPLES and c["unmodified"]["mean"] == 0.0
    # measured 24.8, 9.0, 0.5, 0.4 cm (+- 1.8, 1.7, 0.1, 0.1)
    assert named["mean"] > 15 and named["mean"] > 1.8 * top["mean"] and _gap(named, top) > 4, (named, top)
    assert top["mean"] > 4 and top["mean"] > 5 * max(rand["mean"], bottom["mean"]), (top, rand, bottom)
    assert _gap(top, rand) > 3 and _gap(top, bottom) > 3
    assert rand["mean"] < 1.5 and bottom["mean"] < 1.5
    assert c["top-k without the object"]["mean"] < top["mean"]
    # the named object is no longer the nearest when its patches are gone; random patches change nothing
    nearest = {name: v["nearest"]["mean"] for name, v in study["conditions"].items()}
    assert nearest["unmodified"] > 0.9 and nearest["random"] > 0.9 and nearest["bottom-k"] > 0.9
    assert nearest["named object"] < 0.4 < nearest["top-k"]


def test_the_object_reaches_the_action_tokens_through_the_prefix(study) -> None:
    """Masking the named object only from the prefix's own queries moves the chunk almost as much as masking it
    from every query; masking it only from the action expert's queries (the maps pi0viz draws) barely does."""
    c = {name: v["shift_cm"] for name, v in study["conditions"].items()}
    prefix, expert = c["named object, prefix queries"], c["named object, expert queries"]
    # measured 22.8 +- 1.9 and 2.1 +- 0.5 cm
    assert prefix["mean"] > 5 * expert["mean"] and _gap(prefix, expert) > 5, (prefix, expert)
    assert prefix["mean"] > 0.7 * c["named object"]["mean"]
    assert expert["mean"] < 4
    # the image tokens that cannot read the prompt lose the target too (measured 20.1 +- 2.6 cm, 22 % nearest)
    blind = study["conditions"]["the prompt, image tokens' queries"]
    assert blind["shift_cm"]["mean"] > 10 and _gap(blind["shift_cm"], expert) > 4 and blind["nearest"]["mean"] < 0.5
    assert blind["queries"] == "image tokens" and blind["route"] == "prefix"


def test_pixel_replacement_agrees_in_order_with_key_masking(study) -> None:
    """Painting the same patch sets with the image mean (the model unmodified): named object >> top-k >> random.
    Measured on the 32 examples: named 21.4 +- 1.8, top-k 8.6 +- 1.9, random 2.1 +- 0.6, bottom-k 3.0 +- 1.2 cm."""
    c = {name: v["shift_cm"] for name, v in study["conditions"].items()}
    named, top, rand = c["named object, pixels"], c["top-k, pixels"], c["random, pixels"]
    assert study["conditions"]["named object, pixels"]["method"] == "pixels"
    assert named["mean"] > 2 * top["mean"] and _gap(named, top) > 3, (named, top)
    assert top["mean"] > 2 * rand["mean"] and _gap(top, rand) > 2.5, (top, rand)
    # painting the object moves the chunk less than masking it; painting random patches more (SigLIP sees them)
    assert c["named object"]["mean"] > named["mean"] * 0.8 and c["random"]["mean"] < rand["mean"]


def test_pi05_knockouts_are_exact_too() -> None:
    """pi0.5 (adaRMS action expert, no state token): no keys removed is the unmodified sampler, bit for bit; a
    removed camera changes the actions."""
    import jax

    from pi0viz.model import Pi0Config, init_params
    from pi0viz.model.pi0 import Observation

    cfg = Pi0Config.tiny(pi05=True, action_horizon=4, action_dim=8, max_token_len=8, vocab_size=300)
    params = init_params(cfg, jax.random.key(2))
    rng = np.random.default_rng(1)
    obs = Observation(
        images={k: rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32) for k in cfg.image_keys},
        image_masks={k: np.array([True, True]) for k in cfg.image_keys},
        state=rng.normal(size=(2, 8)).astype(np.float32),
        tokenized_prompt=rng.integers(0, 300, (2, 8)).astype(np.int32),
        tokenized_prompt_mask=np.arange(8)[None] < np.array([[5], [8]]))
    noise = rng.normal(size=(2, 4, 8)).astype(np.float32)
    plain = np.asarray(sample_actions(params, cfg, None, obs, noise=noise).actions)
    none = [Knockout("none", np.zeros(cfg.prefix_len, bool))] * 2
    np.testing.assert_array_equal(sample_knockouts(params, cfg, obs, none, noise, batch=2)[0], plain)
    gone = [Knockout("camera", camera_keys(cfg, cfg.image_keys[0]), route) for route in ("prefix", "expert")]
    assert (np.abs(sample_knockouts(params, cfg, obs, gone, noise, batch=2)[0] - plain).max(axis=(1, 2)) > 0).all()
