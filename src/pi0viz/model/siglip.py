"""SigLIP vision tower as pi0 uses it: ViT with learned position embeddings, no pooling, and a `head` Dense
that projects every patch token to the LLM width.

Letters (the project's axis vocabulary, docs/architecture.md): B images (one camera's batch), Q = S = the 256
patch tokens of one image (queries and keys of its self-attention), W encoder width (So400m: 1152), N heads,
E head dim, F MLP hidden width, W_out output width = the LLM width W (gemma_2b: 2048); h, w patch grid rows, cols.
(big_vision writes H for the head dim and Q/K for query/key tokens; K here would clash with kv heads.)
Parameter paths are big_vision's under `PaliGemma/img/` (flax linen names: `embedding`, `pos_embedding`,
`Transformer/encoderblock/...` stacked over depth, `Transformer/encoder_norm`, `head`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from pi0viz.model.config import SiglipConfig
from pi0viz.model.scan import scan_layers

Params = dict[str, Any]
LAYER_NORM_EPS = 1e-6  # flax nn.LayerNorm default


def layer_norm(x: jax.Array, p: Params) -> jax.Array:
    """flax LayerNorm: statistics in float32 (fast variance E[x^2] - E[x]^2), result in the promoted dtype."""
    out_dtype = jnp.promote_types(x.dtype, p["scale"].dtype)
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
    mul = jax.lax.rsqrt(var + LAYER_NORM_EPS) * p["scale"].astype(jnp.float32)
    y = (xf - mean) * mul + p["bias"].astype(jnp.float32)
    return y.astype(out_dtype)


def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """flax Dense with dtype=dtype: inputs and parameters cast to dtype."""
    return jnp.dot(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


def _encoder_block(x: jax.Array, p: Params, cfg: SiglipConfig, dtype: jnp.dtype) -> jax.Array:
    """Pre-LN block: x + MHA(LN(x)); x + MLP(LN(x)). x: [B, Q, W]."""
    mha = p["MultiHeadDotProductAttention_0"]
    y = layer_norm(x, p["LayerNorm_0"]).astype(dtype)

    def proj(name: str) -> jax.Array:  # [B, Q, W] x [W, N, E] -> [B, Q, N, E]
        return jnp.einsum("BQW,WNE->BQNE", y, mha[name]["kernel"].astype(dtype)) + mha[name]["bias"].astype(dtype)

    q, k, v = proj("query"), proj("key"), proj("value")
    head_dim = q.shape[-1]
    q = q / jnp.sqrt(head_dim).astype(dtype)  # flax scales the query before the dot product
    scores = jnp.einsum("BQNE,BSNE->BNQS", q, k)  # [B, N, Q, S]
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)  # in the compute dtype, as flax (no fp32 forcing)
    att = jnp.einsum("BNQS,BSNE->BQNE", probs, v)  # [B, Q, N, E]
    out = jnp.einsum("BQNE,NEW->BQW", att, mha["out"]["kernel"].astype(dtype)) + mha["out"]["bias"].astype(dtype)
    x = x + out

    mlp = p["MlpBlock_0"]
    y = layer_norm(x, p["LayerNorm_1"])
    y = _dense(y, mlp["Dense_0"]["kernel"], mlp["Dense_0"]["bias"], dtype)  # [B, Q, F]
    y = jax.nn.gelu(y, approximate=True)
    y = _dense(y, mlp["Dense_1"]["kernel"], mlp["Dense_1"]["bias"], dtype)  # [B, Q, W]
    return x + y


def patch_embed(images: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """SigLIP's patch embedding, the op openpi runs (flax nn.Conv, VALID, stride = kernel = patch), in float32.

    The same op matters in bfloat16: an einsum over patches sums in another order and flips bf16 roundings.
    images: float32[B, h*ph, w*pw, 3]; kernel: [ph, pw, 3, W] (HWIO); bias: [W].
    Returns float32[B, h*w, W], row-major over the patch grid (token p = row p // w, col p % w).
    """
    kernel = kernel.astype(jnp.float32)
    x = jax.lax.conv_general_dilated(
        images.astype(jnp.float32), kernel, window_strides=kernel.shape[:2], padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # [B, h, w, W]
    b, h, w, width = x.shape
    return x.reshape(b, h * w, width) + bias.astype(jnp.float32)


def patchify(images: jax.Array, patch_size: tuple[int, int]) -> jax.Array:
    """[B, h*ph, w*pw, 3] -> [B, h*w, ph, pw, 3], row-major over the patch grid (token p = row p // w, col p % w)."""
    b, hh, ww, c = images.shape
    ph, pw = patch_size
    h, w = hh // ph, ww // pw
    x = images.reshape(b, h, ph, w, pw, c).transpose(0, 1, 3, 2, 4, 5)  # [B, h, w, ph, pw, 3]
    return x.reshape(b, h * w, ph, pw, c)


def encode_images(params: Params, images: jax.Array, cfg: SiglipConfig, dtype: jnp.dtype) -> jax.Array:
    """Image tokens for the LLM.

    Args:
        params: the `PaliGemma/img` subtree.
        images: float32[B, 224, 224, 3] in [-1, 1].
        cfg: SigLIP variant.
        dtype: matmul/activation dtype (bfloat16 in openpi inference).
    Returns:
        dtype[B, 256, W_out]: 256 patch tokens (16 x 16 row-major grid), W_out = head width (= LLM width W).
    """
    x = patch_embed(images, params["embedding"]["kernel"], params["embedding"]["bias"])  # [B, 256, W] float32
    x = x + params["pos_embedding"].astype(jnp.float32)  # [1, 256, W], learned, added in float32
    x = x.astype(dtype)

    def layer(x, p, _):
        return _encoder_block(x, p, cfg, dtype), None

    x, _ = scan_layers(layer, x, params["Transformer"]["encoderblock"])  # over depth
    x = layer_norm(x, params["Transformer"]["encoder_norm"])
    return _dense(x, params["head"]["kernel"], params["head"]["bias"], dtype)  # [B, 256, W_out]
