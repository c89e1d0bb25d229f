"""Policy.from_checkpoint on a checkpoint folder in openpi's layout, written here from the tiny policy."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pi0viz.errors import CheckpointError
from pi0viz.model import save_params
from pi0viz.policy.configs import make_transforms
from pi0viz.policy.jax_policy import Policy
from pi0viz.policy.tokenizer import BUNDLED_MODEL

ASSET_ID = "physical-intelligence/libero"
STATS = {
    "state": {"mean": [0.1, -0.2, 1.0, 3.0, 0.0, 0.1, 0.02, -0.02], "std": [0.1, 0.2, 0.1, 0.3, 0.5, 0.3, 0.01, 0.01],
              "q01": [0.0] * 8, "q99": [1.0] * 8},
    "actions": {"mean": [0.05, 0.1, -0.1, -3.0, 0.0, 0.0, -0.3], "std": [0.3, 0.3, 0.4, 0.05, 0.07, 0.08, 0.9],
                "q01": [0.0] * 7, "q99": [1.0] * 7},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """<dir>/params (orbax, key "params") and <dir>/assets/<asset_id>/norm_stats.json, as openpi writes them."""
    tiny = Policy.tiny(seed=0)
    root = tmp_path_factory.mktemp("ckpt")
    save_params(tiny.params, root / "params")
    stats_path = root / "assets" / ASSET_ID / "norm_stats.json"
    stats_path.parent.mkdir(parents=True)
    stats_path.write_text(json.dumps({"norm_stats": STATS}))
    return root, tiny


def _obs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/state": np.asarray(STATS["state"]["mean"]) + rng.normal(size=8) * 0.1,
        "prompt": "turn on the stove and put the moka pot on it",
    }


def test_checkpoint_round_trip_gives_the_same_actions(checkpoint):
    root, tiny = checkpoint
    config = tiny.config
    loaded = Policy.from_checkpoint(root, config=config, tokenizer_path=BUNDLED_MODEL, dtype="float32", seed=3)
    in_memory = Policy(tiny.params, config, make_transforms(config, tiny.tokenizer, STATS), seed=3)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(in_memory.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in ("state", "actions"):
        for field in ("mean", "std"):
            np.testing.assert_array_equal(loaded.norm_stats[key][field], np.asarray(STATS[key][field]))
    for step in range(2):
        obs = _obs(step)
        np.testing.assert_array_equal(loaded.infer(obs)["actions"], in_memory.infer(obs)["actions"])


def test_checkpoint_dtype_and_tokenizer_warnings(checkpoint, caplog):
    root, tiny = checkpoint
    with caplog.at_level(logging.WARNING):
        # No tokenizer given and no PaliGemma in openpi's cache: the bundled one, with a warning.
        p = Policy.from_checkpoint(root, config=tiny.config, dtype="bfloat16")
    assert p.config.dtype == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(p.params)} == {jnp.dtype(jnp.bfloat16)}
    if p.tokenizer.is_bundled:
        assert "mean nothing to a trained pi0" in caplog.text
    with pytest.raises(CheckpointError, match="norm stats"):
        Policy.from_checkpoint(root, config=tiny.config, tokenizer_path=BUNDLED_MODEL, asset_id="other/robot",
                               dtype="float32")

