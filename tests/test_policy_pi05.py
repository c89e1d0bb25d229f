"""openpi's pi05_libero pipeline around the tiny pi0.5: quantile normalization, the discrete-state prompt,
the named config table, and a call on a shipped LIBERO frame with its capture bundle."""

from __future__ import annotations

import numpy as np
import pytest

from pi0viz.core.bundle import load_bundle, save_bundle
from pi0viz.errors import ConfigError
from pi0viz.policy.configs import CONFIGS, get_config
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.policy.norm_stats import quantile_normalize, quantile_unnormalize
from pi0viz.policy.tokenizer import PromptTokenizer, discretize_state
from pi0viz.policy.transforms import NormalizeState, UnnormalizeActions

QSTATS = {"mean": np.zeros(2), "std": np.ones(2), "q01": np.array([0.0, -2.0]), "q99": np.array([1.0, 2.0])}


def test_quantile_normalize_worked_values():
    out = quantile_normalize(np.array([0.5, 1.0]), QSTATS, 4)
    # (0.5 - 0) / (1 + 1e-6) * 2 - 1 and (1 + 2) / (4 + 1e-6) * 2 - 1, then zero padding
    np.testing.assert_allclose(out, [1 / (1 + 1e-6) - 1, 6 / (4 + 1e-6) - 1, 0, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(quantile_normalize(np.array([0.0, -2.0]), QSTATS, 2), [-1, -1], atol=1e-12)
    back = quantile_unnormalize(np.array([[-1.0, 1.0, 0.25]]), QSTATS)
    np.testing.assert_allclose(back, [[0.0, 2.0 + 1e-6, 0.25]], atol=1e-12)  # dims past the stats untouched


def test_discretize_state_bins():
    # openpi: digitize over linspace(-1, 1, 257)[:-1], minus 1 -> 256 bins of width 2/256
    got = discretize_state(np.array([-1.5, -1.0, -1.0 + 2 / 256, 0.0, 0.999, 1.0, 3.0]))
    np.testing.assert_array_equal(got, [-1, 0, 1, 128, 255, 255, 255])


def test_discrete_state_prompt_text():
    tok = PromptTokenizer.bundled()
    ids, mask = tok.tokenize("pick_up the bowl\n", 200, state=np.array([0.0, -1.0, 1.0]))
    assert ids[0] == tok.bos_id and mask.sum() < 200 and not mask[mask.sum():].any()
    text = tok.decode(ids, mask)
    assert text.startswith("Task: pick up the bowl, State: 128 0 255;\nAction:"), text
    plain, plain_mask = tok.tokenize("pick_up the bowl\n", 200)
    assert "State" not in tok.decode(plain, plain_mask)


def test_config_table():
    assert set(CONFIGS) >= {"pi0_libero", "pi05_libero", "pi0_base", "pi05_base"}
    libero = get_config("pi05_libero")
    assert (libero.model.pi05, libero.model.action_horizon, libero.model.max_token_len) == (True, 10, 200)
    assert (libero.normalization, libero.delta_actions, libero.discrete_state_input) == ("quantile", False, False)
    assert get_config("pi05_base").discrete_state_input and get_config("pi05_base").model.action_horizon == 50
    assert get_config("pi0_libero").delta_actions and get_config("pi0_libero").normalization == "zscore"
    tiny = libero.tiny_model_config(vocab_size=1536)
    assert (tiny.pi05, tiny.action_horizon, tiny.prefix_len, tiny.suffix_len) == (True, 10, 968, 10)
    with pytest.raises(ConfigError, match="pi05_libero"):
        get_config("pi05_liber")


def test_quantile_needs_q01_q99():
    with pytest.raises(ConfigError, match="q01 and q99"):
        NormalizeState({"mean": np.zeros(7), "std": np.ones(7)}, normalization="quantile")
    with pytest.raises(ConfigError, match="q01 and q99"):
        UnnormalizeActions({k: {"mean": np.zeros(7), "std": np.ones(7)} for k in ("state", "actions")}, "quantile")


@pytest.fixture(scope="module")
def tiny05():
    from pi0viz.policy.jax_policy import Policy

    return Policy.tiny(seed=0, policy_config="pi05_libero")


def test_tiny_pi05_libero_call(tiny05, tmp_path):
    frame = load_libero_frames()[0]
    out = tiny05.infer(frame.observation(), return_bundle=True, inference_step=4)
    assert out["actions"].shape == (10, 7) and out["actions"].dtype == np.float32
    bundle = out["attention_bundle"]
    assert bundle.attention.shape == (10, 4, 1, 1, 8, 10, 968 + 10)
    assert (bundle.num_state_tokens, bundle.num_action_tokens) == (0, 10)
    assert np.all(bundle.attention[..., 512:768] == 0.0)  # LIBERO's absent right wrist
    n = int(bundle.token_mask.sum())
    assert np.all(bundle.attention[..., 768 + n:968] == 0.0) and np.all(bundle.attention[..., 768:768 + n] > 0)
    again = load_bundle(save_bundle(bundle, tmp_path / "call.npz"))
    assert again.num_state_tokens == 0 and again.attention.shape == bundle.attention.shape
    # pi05_libero: no state token and no state in the prompt, so the state does not reach the actions at all.
    noise = np.random.default_rng(0).normal(size=(10, 32)).astype(np.float32)
    a = tiny05.infer(frame.observation(), noise=noise)["actions"]
    moved = {**frame.observation(), "observation/state": frame.observation()["observation/state"] + 0.3}
    np.testing.assert_array_equal(tiny05.infer(moved, noise=noise)["actions"], a)


def test_discrete_state_puts_the_state_in_the_prompt(tiny05):
    from pi0viz.policy.jax_policy import Policy

    from pi0viz.policy.configs import make_transforms

    policy = Policy(tiny05.params, tiny05.config,
                    make_transforms(tiny05.config, tiny05.tokenizer, tiny05.norm_stats, pipeline="pi05_base"))
    obs = load_libero_frames()[0].observation()
    # identity stats (q01 -1, q99 1): the normalized state is the state up to 1e-6; bins are 2/256 wide
    obs["observation/state"] = np.array([0.004, -0.996, 0.999, 0.504, -0.496, 2.0, -3.0, 0.254])
    inputs = policy.prepare(obs)
    text = policy.tokenizer.decode(inputs.token_ids, inputs.token_mask)
    assert "State: 128 0 255 192 64 255 -1 160;" in text, text
    pieces = "".join(policy.tokenizer.pieces(inputs.token_ids, inputs.token_mask))
    assert "State: 128 0 255" in pieces  # the viewer's prompt map shows the state tokens


def test_pi05_libero_checkpoint_uses_quantile_stats(tiny05, tmp_path):
    """A pi0.5 checkpoint folder in openpi's layout loads with policy_config="pi05_libero": the state is
    quantile-normalized and the actions quantile-unnormalized with the checkpoint's q01/q99 (not mean/std)."""
    import json

    from pi0viz.model import save_params
    from pi0viz.policy.jax_policy import Policy
    from pi0viz.policy.tokenizer import BUNDLED_MODEL

    stats = {"state": {"mean": [5.0] * 8, "std": [9.0] * 8, "q01": [-0.5] * 8, "q99": [1.5] * 8},
             "actions": {"mean": [5.0] * 7, "std": [9.0] * 7, "q01": [0.0, -1, -2, -3, -4, -5, -6],
                         "q99": [1.0, 2, 3, 4, 5, 6, 7]}}
    save_params(tiny05.params, tmp_path / "params")
    path = tmp_path / "assets" / "physical-intelligence" / "libero" / "norm_stats.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"norm_stats": stats}))
    policy = Policy.from_checkpoint(tmp_path, policy_config="pi05_libero", config=tiny05.config,
                                    tokenizer_path=BUNDLED_MODEL, dtype="float32")
    assert "pi0.5" in policy.description and "pi05_libero" in policy.description
    obs = load_libero_frames()[0].observation()
    obs["observation/state"] = np.full(8, 0.5)
    inputs = policy.prepare(obs)
    np.testing.assert_allclose(inputs.state[:8], 0.0, atol=1e-6)  # (0.5 + 0.5) / 2 * 2 - 1
    assert not inputs.state[8:].any()
    noise = np.random.default_rng(1).normal(size=(10, 32)).astype(np.float32)
    from pi0viz.policy.jax_policy import to_observation

    model = np.asarray(policy.infer_observation(to_observation(inputs), noise=noise[None]).actions)[0]
    q01, q99 = np.asarray(stats["actions"]["q01"]), np.asarray(stats["actions"]["q99"])
    want = (model[:, :7].astype(np.float64) + 1) / 2 * (q99 - q01 + 1e-6) + q01  # no delta quirk for pi0.5
    np.testing.assert_allclose(policy.infer(obs, noise=noise)["actions"], want.astype(np.float32), rtol=1e-6)


def test_serve_cli_lists_every_named_config():
    from pi0viz.serving.cli import (
        CONFIG_NAMES,  # spelled out there so that `serve --lerobot` never imports JAX
    )

    from pi0viz.policy.configs import FAST_CONFIGS

    assert sorted(CONFIG_NAMES) == sorted([*CONFIGS, *FAST_CONFIGS])
