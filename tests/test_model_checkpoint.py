"""openpi checkpoint layout: "value"-wrapped leaves, dtype cast on load, LoRA merge, norm stats."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pi0viz.errors import CheckpointError
from pi0viz.model import load_params, save_params
from pi0viz.model.init import flatten, unflatten
from pi0viz.policy.norm_stats import load_norm_stats

DATA = Path(__file__).parent / "data" / "openpi_pi0_tiny"


@pytest.fixture(scope="module")
def small_tree():
    """A few real leaves of the tiny checkpoint (enough to exercise the layout, cheap to write)."""
    flat = flatten(load_params(DATA / "params"))
    keep = [p for p in flat if p.startswith(("state_proj", "PaliGemma/llm/layers/attn/q_einsum/"))]
    return unflatten({p: flat[p] for p in keep})


def test_value_suffix_is_stripped_and_dtype_cast(small_tree, tmp_path):
    wrapped = jax.tree.map(lambda x: {"value": x}, small_tree)
    save_params(wrapped, tmp_path / "ckpt" / "params")
    loaded = load_params(tmp_path / "ckpt", dtype="bfloat16")  # the checkpoint folder works too
    assert sorted(flatten(loaded)) == sorted(flatten(small_tree))
    for path, leaf in flatten(loaded).items():
        assert leaf.dtype == jnp.bfloat16, path
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flatten(small_tree)[path].astype(jnp.bfloat16)))


def test_lora_factors_are_merged(small_tree, tmp_path):
    flat = flatten(small_tree)
    w = flat["PaliGemma/llm/layers/attn/q_einsum/w"]  # [L, N, D, H]
    a = jnp.ones((*w.shape[:-1], 2), jnp.float32) * 0.5  # rank 2 over the last axis
    b = jnp.ones((*w.shape[:-2], 2, w.shape[-1]), jnp.float32) * 0.25
    flat = {**flat, "PaliGemma/llm/layers/attn/q_einsum/lora_a": a, "PaliGemma/llm/layers/attn/q_einsum/lora_b": b}
    save_params(unflatten(flat), tmp_path / "params")
    with pytest.warns(UserWarning, match="LoRA"):
        loaded = flatten(load_params(tmp_path / "params"))
    assert not any("lora" in p for p in loaded)
    np.testing.assert_allclose(np.asarray(loaded["PaliGemma/llm/layers/attn/q_einsum/w"]), np.asarray(w) + 0.25,
                               rtol=0, atol=1e-6)


def test_missing_checkpoint_says_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="orbax PyTree checkpoint"):
        load_params(tmp_path)


def test_norm_stats(tmp_path):
    folder = tmp_path / "assets" / "physical-intelligence" / "libero"
    folder.mkdir(parents=True)
    stats = {"state": {"mean": [0.1] * 8, "std": [2.0] * 8, "q01": [-1.0] * 8, "q99": [1.0] * 8},
             "actions": {"mean": [0.0] * 7, "std": [1.0] * 7, "q01": None, "q99": None}}
    (folder / "norm_stats.json").write_text(json.dumps({"norm_stats": stats}))
    out = load_norm_stats(tmp_path, "physical-intelligence/libero")
    assert set(out) == {"state", "actions"}
    assert out["state"]["mean"].shape == (8,) and out["state"]["std"][0] == 2.0
    assert set(out["actions"]) == {"mean", "std"}
    with pytest.raises(CheckpointError, match="norm_stats.json"):
        load_norm_stats(tmp_path, "nope")
