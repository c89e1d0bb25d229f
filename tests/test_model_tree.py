"""The parameter tree: full-size pi0 equals the table in the facts doc (§2.1), built abstractly; the tiny
config equals the openpi checkpoint on disk; configs reject what they do not support."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from pi0viz.model import Pi0Config, init_params, load_params, param_shapes
from pi0viz.model.init import abstract_params, flatten

DATA = Path(__file__).parent / "data" / "openpi_pi0_tiny"

# Facts doc §2.1, "Full pi0 (gemma_2b + gemma_300m)", every path and shape written out.
_IMG = "PaliGemma/img"
_BLK = f"{_IMG}/Transformer/encoderblock"
_MHA = f"{_BLK}/MultiHeadDotProductAttention_0"
_L = "PaliGemma/llm"
FULL_PI0 = {
    f"{_IMG}/embedding/kernel": (14, 14, 3, 1152),
    f"{_IMG}/embedding/bias": (1152,),
    f"{_IMG}/pos_embedding": (1, 256, 1152),
    f"{_BLK}/LayerNorm_0/scale": (27, 1152),
    f"{_BLK}/LayerNorm_0/bias": (27, 1152),
    **{f"{_MHA}/{n}/kernel": (27, 1152, 16, 72) for n in ("query", "key", "value")},
    **{f"{_MHA}/{n}/bias": (27, 16, 72) for n in ("query", "key", "value")},
    f"{_MHA}/out/kernel": (27, 16, 72, 1152),
    f"{_MHA}/out/bias": (27, 1152),
    f"{_BLK}/LayerNorm_1/scale": (27, 1152),
    f"{_BLK}/LayerNorm_1/bias": (27, 1152),
    f"{_BLK}/MlpBlock_0/Dense_0/kernel": (27, 1152, 4304),
    f"{_BLK}/MlpBlock_0/Dense_0/bias": (27, 4304),
    f"{_BLK}/MlpBlock_0/Dense_1/kernel": (27, 4304, 1152),
    f"{_BLK}/MlpBlock_0/Dense_1/bias": (27, 1152),
    f"{_IMG}/Transformer/encoder_norm/scale": (1152,),
    f"{_IMG}/Transformer/encoder_norm/bias": (1152,),
    f"{_IMG}/head/kernel": (1152, 2048),
    f"{_IMG}/head/bias": (2048,),
    f"{_L}/embedder/input_embedding": (257152, 2048),
    f"{_L}/layers/attn/q_einsum/w": (18, 8, 2048, 256),
    f"{_L}/layers/attn/kv_einsum/w": (18, 2, 1, 2048, 256),
    f"{_L}/layers/attn/attn_vec_einsum/w": (18, 8, 256, 2048),
    f"{_L}/layers/attn/q_einsum_1/w": (18, 8, 1024, 256),
    f"{_L}/layers/attn/kv_einsum_1/w": (18, 2, 1, 1024, 256),
    f"{_L}/layers/attn/attn_vec_einsum_1/w": (18, 8, 256, 1024),
    f"{_L}/layers/pre_attention_norm/scale": (18, 2048),
    f"{_L}/layers/pre_attention_norm_1/scale": (18, 1024),
    f"{_L}/layers/pre_ffw_norm/scale": (18, 2048),
    f"{_L}/layers/pre_ffw_norm_1/scale": (18, 1024),
    f"{_L}/layers/mlp/gating_einsum": (18, 2, 2048, 16384),
    f"{_L}/layers/mlp/linear": (18, 16384, 2048),
    f"{_L}/layers/mlp_1/gating_einsum": (18, 2, 1024, 4096),
    f"{_L}/layers/mlp_1/linear": (18, 4096, 1024),
    f"{_L}/final_norm/scale": (2048,),
    f"{_L}/final_norm_1/scale": (1024,),
    "state_proj/kernel": (32, 1024),
    "state_proj/bias": (1024,),
    "action_in_proj/kernel": (32, 1024),
    "action_in_proj/bias": (1024,),
    "action_time_mlp_in/kernel": (2048, 1024),
    "action_time_mlp_in/bias": (1024,),
    "action_time_mlp_out/kernel": (1024, 1024),
    "action_time_mlp_out/bias": (1024,),
    "action_out_proj/kernel": (1024, 32),
    "action_out_proj/bias": (32,),
}


# Facts doc §2.2: pi0.5 drops state_proj and action_time_mlp_*, adds time_mlp_in/out, and the action expert's
# norms carry an adaRMS Dense_0 (D -> 3D) instead of a scale.
FULL_PI05 = {
    **{p: s for p, s in FULL_PI0.items() if not p.startswith(("state_proj/", "action_time_mlp_"))
       and p not in (f"{_L}/layers/pre_attention_norm_1/scale", f"{_L}/layers/pre_ffw_norm_1/scale",
                     f"{_L}/final_norm_1/scale")},
    "time_mlp_in/kernel": (1024, 1024),
    "time_mlp_in/bias": (1024,),
    "time_mlp_out/kernel": (1024, 1024),
    "time_mlp_out/bias": (1024,),
    f"{_L}/layers/pre_attention_norm_1/Dense_0/kernel": (18, 1024, 3072),
    f"{_L}/layers/pre_attention_norm_1/Dense_0/bias": (18, 3072),
    f"{_L}/layers/pre_ffw_norm_1/Dense_0/kernel": (18, 1024, 3072),
    f"{_L}/layers/pre_ffw_norm_1/Dense_0/bias": (18, 3072),
    f"{_L}/final_norm_1/Dense_0/kernel": (1024, 3072),
    f"{_L}/final_norm_1/Dense_0/bias": (3072,),
}


@pytest.mark.parametrize("action_horizon", [10, 50])  # pi05_libero, pi05_base: the horizon adds no parameters
def test_full_pi05_tree_equals_facts_table(action_horizon):
    shapes = param_shapes(Pi0Config.pi0(pi05=True, action_horizon=action_horizon))
    assert shapes == FULL_PI05
    assert len(FULL_PI05) == len(FULL_PI0) - 6 - 3 + 4 + 6  # 6 projections, 3 scales out; 4 + 6 in


def test_full_pi0_tree_equals_facts_table():
    shapes = param_shapes(Pi0Config.pi0())
    assert sorted(set(shapes) - set(FULL_PI0)) == []
    assert sorted(set(FULL_PI0) - set(shapes)) == []
    for path, shape in FULL_PI0.items():
        assert shapes[path] == shape, (path, shapes[path], shape)
    # About 3.3B parameters: LLM 2.51B + expert 0.31B + SigLIP 0.41B + projections.
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert 3.2e9 < total < 3.4e9, total


def test_full_pi0_is_abstract_and_bfloat16():
    leaves = jax.tree.leaves(abstract_params(Pi0Config.pi0()))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert {str(x.dtype) for x in leaves} == {"bfloat16"}


def test_init_params_matches_the_abstract_tree_and_is_seeded():
    config = Pi0Config.tiny()
    a, b, c = (init_params(config, jax.random.key(k)) for k in (0, 0, 1))
    want = {p: (x.shape, x.dtype) for p, x in flatten(abstract_params(config)).items()}
    assert {p: (x.shape, x.dtype) for p, x in flatten(a).items()} == want
    flat_a, flat_b, flat_c = flatten(a), flatten(b), flatten(c)
    for path, x in flat_a.items():
        np.testing.assert_array_equal(np.asarray(x), np.asarray(flat_b[path]), err_msg=path)
    emb = np.asarray(flat_a["PaliGemma/llm/embedder/input_embedding"])  # N(0, 1), sampled in several chunks
    assert abs(emb.std() - 1.0) < 0.01 and abs(emb.mean()) < 0.01
    assert not np.array_equal(emb, np.asarray(flat_c["PaliGemma/llm/embedder/input_embedding"]))
    q = np.asarray(flat_a["PaliGemma/llm/layers/attn/q_einsum/w"])  # lecun normal, fan_in = width 64
    assert abs(q.std() - 64 ** -0.5) < 0.01
    assert not np.asarray(flat_a["PaliGemma/llm/final_norm/scale"]).any()  # RMSNorm scales start at 0


@pytest.mark.parametrize("folder, config", [
    ("openpi_pi0_tiny", Pi0Config.tiny()),
    ("openpi_pi05_tiny", Pi0Config.tiny(pi05=True, action_horizon=10, max_token_len=200)),
], ids=["pi0", "pi05"])
def test_tiny_tree_equals_openpi_checkpoint(folder, config):
    on_disk = {p: tuple(v.shape) for p, v in flatten(load_params(DATA.parent / folder / "params")).items()}
    assert on_disk == param_shapes(config)


def test_config_validation():
    assert (Pi0Config(pi05=True).max_token_len, Pi0Config(pi05=True).suffix_len) == (200, 50)
    with pytest.raises(ValueError, match="unknown Gemma variant"):
        Pi0Config(paligemma_variant="gemma_7b")
    with pytest.raises(ValueError, match="SigLIP"):
        Pi0Config(siglip_variant="XL/14")
    with pytest.raises(ValueError, match="must share"):
        Pi0Config(paligemma_variant="dummy", action_expert_variant="gemma_300m")
    assert Pi0Config(paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora").llm.width == 2048
    tiny = Pi0Config.tiny()
    assert (tiny.prefix_len, tiny.suffix_len, tiny.siglip.width, tiny.dtype) == (816, 51, 32, "float32")
    assert Pi0Config.pi0().siglip.patch_size == (14, 14)
