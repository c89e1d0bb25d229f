"""pi0 in JAX: loads openpi checkpoints and returns, next to the actions, the attention of every denoising
step and layer, taken from the same softmax that produced the actions.

Read order: config (variants) -> siglip (images -> tokens) -> gemma (two-expert joint attention) -> pi0
(embeddings, masks, KV cache, Euler sampler) -> checkpoint (openpi params on disk).

    from pi0viz.model import Pi0Config, sample_actions, CaptureOptions
    from pi0viz.model.checkpoint import load_params
    params = load_params("<checkpoint>/params", dtype="bfloat16")
    out = sample_actions(params, Pi0Config.pi0(), rng, observation, capture=CaptureOptions())
    out.attention  # [10, 18, B, 1, 8, 51, 867] float32
"""

from pi0viz.model.checkpoint import load_params, param_shapes, save_params
from pi0viz.model.config import GemmaConfig, Pi0Config, SiglipConfig
from pi0viz.model.init import abstract_params, init_params
from pi0viz.model.pi0 import (
    CaptureOptions,
    Observation,
    SampleOutput,
    denoising_times,
    embed_prefix,
    embed_suffix,
    make_attn_mask,
    sample_actions,
)

__all__ = [
    "CaptureOptions",
    "GemmaConfig",
    "Observation",
    "Pi0Config",
    "SampleOutput",
    "SiglipConfig",
    "denoising_times",
    "embed_prefix",
    "embed_suffix",
    "abstract_params",
    "init_params",
    "load_params",
    "make_attn_mask",
    "param_shapes",
    "sample_actions",
    "save_params",
]
