"""pi0-FAST in pi0viz's JAX model, against openpi's own recorded call on a tiny pi0-FAST checkpoint
(tests/data/openpi_pi0fast_tiny, see its README), and structural facts on inputs built here.

Tolerances are the issue's: the same output tokens, attention atol 2e-5, logits atol 1e-4, masked keys exactly 0.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pi0viz.errors import CheckpointError
from pi0viz.model import (
    CaptureOptions,
    FastObservation,
    Pi0FastConfig,
    abstract_fast_params,
    fast_param_shapes,
    load_fast_params,
    prefill,
    sample_tokens,
)

DATA = Path(__file__).parent / "data" / "openpi_pi0fast_tiny"
CONFIG = Pi0FastConfig.tiny()
P, S, J = 832, 856, 24  # prefix slots (3 x 256 image + 64 prompt), kv-cache slots, decode steps
BASE, RIGHT_WRIST = slice(0, 256), slice(512, 768)  # unaligned prefix indices


def observation_of(case) -> FastObservation:
    keys = [str(k) for k in case["image_keys"]]
    return FastObservation(
        images={k: case[f"image/{k}"] for k in keys},
        image_masks={k: case[f"image_mask/{k}"] for k in keys},
        tokenized_prompt=case["tokenized_prompt"],
        tokenized_prompt_mask=case["tokenized_prompt_mask"],
        token_ar_mask=case["token_ar_mask"],
    )


@pytest.fixture(scope="module")
def params():
    return load_fast_params(DATA / "params", CONFIG)


@pytest.fixture(scope="module")
def case():
    return dict(np.load(DATA / "case_A.npz", allow_pickle=False))


@pytest.fixture(scope="module")
def out_a(params, case):
    return sample_tokens(params, CONFIG, observation_of(case), capture=CaptureOptions(), prefill_rows=16,
                         keep_logits=True)


def test_config_matches_the_reference():
    meta = __import__("json").loads((DATA / "meta.json").read_text())["config"]
    assert (CONFIG.prefix_len, CONFIG.cache_len) == (meta["prefix_len_P"], meta["kv_cache_len"]) == (P, S)
    assert CONFIG.max_decoding_steps == meta["max_decoding_steps"] == J
    llm = meta["gemma_fast_variant_dummy (patched in)"]
    assert (CONFIG.llm.width, CONFIG.llm.depth, CONFIG.llm.num_heads, CONFIG.llm.num_kv_heads,
            CONFIG.llm.head_dim, CONFIG.llm.mlp_dim) == (llm["width"], llm["depth"], llm["num_heads"],
                                                       llm["num_kv_heads"], llm["head_dim"], llm["mlp_dim"])


def test_params_load_with_openpi_shapes(params):
    flat = dict(np.load(DATA / "params_flat.npz", allow_pickle=False))
    assert set(flat) == set(fast_param_shapes(CONFIG))
    loaded = jax.tree_util.tree_flatten_with_path(params)[0]
    assert len(loaded) == len(flat) == 32
    for path, leaf in loaded:
        key = "/".join(p.key for p in path)
        np.testing.assert_array_equal(np.asarray(leaf), flat[key])


def test_pi0_config_rejects_a_pi0_checkpoint():
    with pytest.raises(CheckpointError, match="pi0-FAST"):
        load_fast_params(DATA.parent / "openpi_pi0_tiny" / "params", CONFIG)


def test_case_a_tokens_and_eos(out_a, case):
    np.testing.assert_array_equal(np.asarray(out_a.tokens), case["output_token_ids"])  # EOS at step 9, then 0
    assert int(out_a.num_steps) == int(case["num_decode_steps"]) == 10
    np.testing.assert_array_equal(np.asarray(out_a.key_len), case["decode_key_len"])
    np.testing.assert_array_equal(np.asarray(out_a.prefix_start), case["prefix_start"])
    np.testing.assert_array_equal(np.asarray(out_a.key_source), case["key_slot_source"])


def test_case_a_attention_matches_openpi(out_a, case):
    att, ref = np.asarray(out_a.attention), case["decode_attention_probs"]
    assert att.shape == ref.shape == (J, 4, 1, 1, 8, 1, S)  # [J, L, B, K, G, Q = 1, S]
    np.testing.assert_allclose(att, ref, rtol=0, atol=2e-5)
    # Masked keys (front padding, empty decode slots) and the steps that did not run are exactly 0 in both.
    masked = np.broadcast_to(~case["decode_attn_mask"][:, None, :, None, None, None, :], att.shape)
    assert masked.any() and np.all(att[masked] == 0.0)
    np.testing.assert_array_equal(att == 0.0, ref == 0.0)
    assert np.all(att[int(out_a.num_steps):] == 0.0)
    run = att[: int(out_a.num_steps)]
    np.testing.assert_allclose(run.sum(-1), 1.0, rtol=0, atol=1e-5)


def test_case_a_logits_match_openpi(out_a, case):
    logits = np.asarray(out_a.logits)
    np.testing.assert_allclose(logits[:4], case["logits_first"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out_a.top_logits), case["logits_top5"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out_a.top_ids), case["logits_top5_ids"])
    assert np.all(logits[int(out_a.num_steps):] == 0.0)


def test_case_a_prefill_matches_openpi(params, out_a, case):
    np.testing.assert_allclose(np.asarray(out_a.prefill_attention), case["prefill_attention_probs"], rtol=0,
                               atol=2e-5)
    pre = jax.jit(lambda p, o: prefill(p, CONFIG, o))(params, observation_of(case))
    np.testing.assert_array_equal(np.asarray(pre["shift"]), case["align_shift"])
    np.testing.assert_array_equal(np.asarray(pre["prefix_mask"]), case["prefix_mask"])
    np.testing.assert_array_equal(np.asarray(pre["positions"]), case["prefix_positions"])
    np.testing.assert_array_equal(np.asarray(pre["prefill_len"]), case["prefill_len"])
    np.testing.assert_array_equal(np.asarray(pre["prefix_attn_mask"]), case["prefix_attn_mask"])
    k, v = (np.asarray(x) for x in pre["cache"])  # [L, B, S, K, E]; decode slots still empty
    np.testing.assert_allclose(k[:, :, :P], case["kv_cache_k"][:, :, :P], rtol=0, atol=1e-4)
    np.testing.assert_allclose(v[:, :, :P], case["kv_cache_v"][:, :, :P], rtol=0, atol=1e-4)
    assert np.all(k[:, :, P:] == 0.0) and np.all(v[:, :, P:] == 0.0)


def test_masked_query_rows_are_uniform_over_the_whole_cache(params, case):
    """A fully masked prefill row (front padding) attends 1/S to every cache slot, the 24 empty ones included."""
    pre = jax.jit(lambda p, o: prefill(p, CONFIG, o, keep_rows=P))(params, observation_of(case))
    probs = np.asarray(pre["probs"])  # [L, B, K, G, P, S]
    pad = int(case["prefix_start"][0])
    np.testing.assert_array_equal(probs[..., :pad, :], np.float32(1.0 / S))
    assert np.all(probs[..., pad:, P:] == 0.0)


def test_batch_of_two_with_a_masked_camera(params, case):
    """Row 0 reproduces case A; row 1 (right wrist masked, as openpi's FAST policies never do) shows openpi's decode
    quirk: the masked camera's keys lie at or after prefix_start and ARE attended, while the first 256 valid keys
    (the base camera) fall before prefix_start and get exactly 0."""
    obs = observation_of(case)
    two = FastObservation(
        images={k: np.concatenate([v, v[:, ::-1]]) for k, v in obs.images.items()},
        image_masks={k: np.concatenate([v, ~v if k == "right_wrist_0_rgb" else v]) for k, v in obs.image_masks.items()},
        **{n: np.concatenate([getattr(obs, n)] * 2) for n in ("tokenized_prompt", "tokenized_prompt_mask",
                                                               "token_ar_mask")},
    )
    out = sample_tokens(params, CONFIG, two, capture=CaptureOptions())
    run = min(int(out.num_steps), int(case["num_decode_steps"]))
    np.testing.assert_array_equal(np.asarray(out.tokens)[0, :run], case["output_token_ids"][0, :run])
    att = np.asarray(out.attention)[:run]  # [J, L, B, K, G, 1, S]
    np.testing.assert_allclose(att[:, :, :1], case["decode_attention_probs"][:run], rtol=0, atol=2e-5)
    start = int(np.asarray(out.prefix_start)[1])
    assert start == 19 + 256  # front padding + the masked camera's 256 slots
    source = np.asarray(out.key_source)[1]
    base = (source >= BASE.start) & (source < BASE.stop)
    wrist = (source >= RIGHT_WRIST.start) & (source < RIGHT_WRIST.stop)
    assert np.all(att[:, :, 1][..., base] == 0.0)
    assert np.all(att[:, :, 1][..., wrist] > 0.0)


def test_training_layout_prompt_is_prefix_lm(params, case):
    """Slots with token_ar_mask 1 (the training postfix) attend causally; nothing before them sees them."""
    obs = observation_of(case)
    valid = int(case["tokenized_prompt_mask"].sum())
    ar = np.zeros_like(obs.token_ar_mask)
    ar[:, valid - 5: valid] = 1  # the last 5 real prompt tokens become a causal postfix
    pre = jax.jit(lambda p, o: prefill(p, CONFIG, o))(params, FastObservation(**{**vars(obs), "token_ar_mask": ar}))
    mask = np.asarray(pre["prefix_attn_mask"])[0]  # aligned [P, S]: the last valid token is slot P - 1
    post = np.arange(P - 5, P)
    for i, q in enumerate(post):
        np.testing.assert_array_equal(mask[q, post], np.arange(5) <= i)
    assert not mask[: P - 5][:, post].any()


def test_bfloat16_gives_the_same_tokens(case):
    config = Pi0FastConfig.tiny(dtype="bfloat16")
    params = load_fast_params(DATA / "params", config, dtype="bfloat16")
    out = sample_tokens(params, config, observation_of(case),
                        capture=CaptureOptions(fuse_heads=True, dtype="float16", prefix_keys_only=True))
    np.testing.assert_array_equal(np.asarray(out.tokens), case["output_token_ids"])
    att = np.asarray(out.attention)
    assert att.shape == (J, 4, 1, 1, 1, 1, P) and att.dtype == np.float16  # heads fused, prefix keys only
    ref = case["decode_attention_probs"].max(axis=(3, 4), keepdims=True)[..., :P]
    np.testing.assert_allclose(att.astype(np.float32), ref, rtol=0, atol=0.05)


def test_full_size_pi0_fast_libero_shapes():
    """openpi's pi0_fast_libero (gemma_2b, So400m/14, 180 prompt slots, 256 decode steps), traced, no weights."""
    config = Pi0FastConfig.pi0_fast_libero()
    p, s, j = 3 * 256 + 180, 3 * 256 + 180 + 256, 256
    assert (config.prefix_len, config.cache_len, config.max_decoding_steps) == (p, s, j)
    shapes = fast_param_shapes(config)
    assert shapes["PaliGemma/llm/layers/attn/q_einsum/w"] == (18, 8, 2048, 256)
    assert shapes["PaliGemma/llm/embedder/input_embedding"] == (257152, 2048)
    assert shapes["PaliGemma/img/head/kernel"] == (1152, 2048)
    assert not any("_1/" in k for k in shapes if k.startswith("PaliGemma/llm"))
    b = 1
    obs = FastObservation(
        images={k: jax.ShapeDtypeStruct((b, 224, 224, 3), jnp.float32) for k in config.image_keys},
        image_masks={k: jax.ShapeDtypeStruct((b,), jnp.bool_) for k in config.image_keys},
        tokenized_prompt=jax.ShapeDtypeStruct((b, 180), jnp.int32),
        tokenized_prompt_mask=jax.ShapeDtypeStruct((b, 180), jnp.bool_),
        token_ar_mask=jax.ShapeDtypeStruct((b, 180), jnp.int32),
    )
    out = jax.eval_shape(lambda prm, o: sample_tokens(prm, config, o, capture=CaptureOptions(), prefill_rows=4),
                         abstract_fast_params(config), obs)
    assert out.tokens.shape == (b, j)
    assert out.attention.shape == (j, 18, b, 1, 8, 1, s)  # [J, L, B, K, G, Q = 1, S]
    assert out.prefill_attention.shape == (18, b, 1, 8, 4, s)
    assert out.key_source.shape == (b, s) and out.top_ids.shape == (j, b, 5)
    assert out.attention.dtype == jnp.float32
