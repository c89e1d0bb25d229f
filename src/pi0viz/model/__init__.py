"""pi0 in JAX: loads openpi checkpoints and returns, next to the actions, the attention of every denoising
step and layer, taken from the same softmax that produced the actions.

Read order: config (variants) -> siglip (images -> tokens) -> gemma (two-expert joint attention) -> pi0
(embeddings, masks, KV cache, Euler sampler) -> checkpoint (openpi params on disk); pi0_fast (prefix-LM mask,
alignment, prefill and greedy decoding over a fixed-size kv cache) after pi0.

    from pi0viz.model import Pi0Config, sample_actions, CaptureOptions
    from pi0viz.model.checkpoint import load_params
    params = load_params("<checkpoint>/params", dtype="bfloat16")
    out = sample_actions(params, Pi0Config.pi0(), rng, observation, capture=CaptureOptions())
    out.attention  # float32[D, L, B, K, G, Q, S] = [10, 18, B, 1, 8, 51, 867]

pi0-FAST (pi0_fast: one PaliGemma, greedy decoding of FAST tokens with a kv cache):

    from pi0viz.model import Pi0FastConfig, load_fast_params, sample_tokens
    config = Pi0FastConfig.pi0_fast_libero()
    out = sample_tokens(load_fast_params("<checkpoint>/params", config, dtype="bfloat16"), config, observation,
                        capture=CaptureOptions())
    out.tokens, out.attention  # int32[B, J]; float32[J, L, B, K, G, 1, S] = [256, 18, B, 1, 8, 1, 1204]

Axis letters (the project's one vocabulary, defined in docs/architecture.md; used in every einsum, shape
comment and docstring of this package): B batch, C cameras, D denoising steps, L layers, K kv heads,
G query heads per kv head, N = K x G query heads, Q query tokens, S key tokens, P prefix tokens,
T prompt token slots, A action tokens (= the action horizon), J decode steps (pi0-FAST), W model width (W_i:
expert i's; SigLIP's W_out = the LLM width), F MLP hidden width, E head dimension, V vocabulary; h, w image (or
patch grid) sizes.
openpi / big_vision use other letters (D width, H head dim or horizon, T queries); they are renamed here.
"""

from pi0viz.model.checkpoint import load_params, param_shapes, save_params
from pi0viz.model.config import GemmaConfig, Pi0Config, Pi0FastConfig, SiglipConfig
from pi0viz.model.init import abstract_params, init_params
from pi0viz.model.pi0 import (
    CaptureOptions,
    Observation,
    SampleOutput,
    diffusion_times,
    embed_prefix,
    embed_suffix,
    make_attn_mask,
    sample_actions,
)
from pi0viz.model.pi0_fast import (
    FastObservation,
    FastSampleOutput,
    abstract_fast_params,
    fast_param_shapes,
    load_fast_params,
    prefill,
    sample_tokens,
)

__all__ = [
    "CaptureOptions",
    "FastObservation",
    "FastSampleOutput",
    "GemmaConfig",
    "Observation",
    "Pi0Config",
    "Pi0FastConfig",
    "SampleOutput",
    "SiglipConfig",
    "diffusion_times",
    "embed_prefix",
    "embed_suffix",
    "abstract_fast_params",
    "abstract_params",
    "fast_param_shapes",
    "load_fast_params",
    "prefill",
    "sample_tokens",
    "init_params",
    "load_params",
    "make_attn_mask",
    "param_shapes",
    "sample_actions",
    "save_params",
]
