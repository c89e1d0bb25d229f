"""Two-expert Gemma with joint attention, as pi0 and pi0.5 use it (openpi `gemma.py`, big_vision lineage).

Letters (the project's axis vocabulary, docs/architecture.md): B batch, Q query tokens, S key/value tokens,
N query heads, K kv heads, G query heads per kv head (N = K * G), E head dim, W model width (W_i: expert i's),
F MLP hidden width, L layers, V vocabulary. big_vision's names differ (T queries, H head dim, D width).

Expert 0 (PaliGemma LLM) handles the prefix tokens, expert 1 (action expert) the suffix tokens. Every layer runs
each present expert's own projections, concatenates their tokens (expert 0 first), attends jointly through ONE
softmax, and splits the result back per expert. Expert 0's parameters have plain names (`q_einsum`, `mlp`, ...),
expert i > 0 the suffix `_i` (`q_einsum_1`, `mlp_1`, ...), all stacked over layers on axis 0 under
`PaliGemma/llm/layers/`.

pi0.5 (openpi `adarms=True`): the action expert's norms are adaptive (adaRMS). Each has no `scale` but a
`Dense_0` (kernel [W, 3W], bias [3W]) that maps the time conditioning vector to [scale | shift | gate]; the
normed tokens become `normed * (1 + scale) + shift` and the residual branch after that norm is multiplied by
`gate`. The PaliGemma expert keeps plain RMSNorm and plain residuals.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from pi0viz.model.scan import scan_layers

Params = dict[str, Any]
BIG_NEG = -2.3819763e38  # openpi/big_vision masking constant (not -inf: fully masked rows stay finite)
RMS_EPS = 1e-6
ROPE_MAX_WAVELENGTH = 10_000

# capture(state, layer, probs float32[B, K, G, Q, S], masked_logits float32[B, K, G, Q, S]) -> state.
# It folds one layer's attention into a caller-owned buffer (written in place, no per-layer stacking copies).
CaptureFn = Callable[[Any, jax.Array, jax.Array, jax.Array], Any]


def _name(name: str, expert: int) -> str:
    return name if expert == 0 else f"{name}_{expert}"


def _norm_params(node: Params) -> Params:
    """One norm's weights: {"scale": [..., W]} (plain RMSNorm) or {"kernel": [..., W, 3W], "bias": [..., 3W]}
    (adaRMS, the `Dense_0` under the norm)."""
    if "Dense_0" in node:
        return {"kernel": node["Dense_0"]["kernel"], "bias": node["Dense_0"]["bias"]}
    return {"scale": node["scale"]}


def expert_layer_params(layers: Params, expert: int) -> Params:
    """The stacked [L, ...] weights of one expert, under short names."""
    attn = layers["attn"]
    mlp = layers[_name("mlp", expert)]
    return {
        "q": attn[_name("q_einsum", expert)]["w"],  # [L, N, W, E]
        "kv": attn[_name("kv_einsum", expert)]["w"],  # [L, 2, K, W, E]
        "out": attn[_name("attn_vec_einsum", expert)]["w"],  # [L, N, E, W]
        "pre_attention_norm": _norm_params(layers[_name("pre_attention_norm", expert)]),  # scale [L, W] or Dense
        "pre_ffw_norm": _norm_params(layers[_name("pre_ffw_norm", expert)]),
        "gating": mlp["gating_einsum"],  # [L, 2, W, F]
        "linear": mlp["linear"],  # [L, F, W]
    }


def rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    """RMSNorm with (1 + scale): statistics in float32, `1 + scale` in the parameter dtype, result in x's dtype."""
    var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    normed = x * jnp.reciprocal(jnp.sqrt(var + RMS_EPS))  # float32
    return (normed * (1 + scale)).astype(x.dtype)


def adarms_modulation(cond: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """[scale | shift | gate] of one adaRMS norm: flax Dense(3W, dtype=dtype), so inputs and weights are cast to
    the activation dtype first. cond float32[B, W_i] -> dtype[B, 1, 3W_i] (broadcast over tokens)."""
    return (jnp.dot(cond.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype))[:, None, :]


def norm(x: jax.Array, p: Params, cond: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """Plain RMSNorm (cond None: returns (y, None)) or adaRMS (returns (y, gate dtype[B, 1, W])).

    adaRMS: y = normed * (1 + scale) + shift, with normed in float32 (as openpi) and the result in x's dtype.
    """
    if cond is None:
        return rms_norm(x, p["scale"]), None
    var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    normed = x * jnp.reciprocal(jnp.sqrt(var + RMS_EPS))  # float32
    scale, shift, gate = jnp.split(adarms_modulation(cond, p["kernel"], p["bias"], x.dtype), 3, axis=-1)
    return (normed * (1 + scale) + shift).astype(x.dtype), gate


def _residual(x: jax.Array | None, y: jax.Array | None, gate: jax.Array | None) -> jax.Array | None:
    """x + y, or x + y * gate after an adaRMS norm (pi0.5's gated residual)."""
    if x is None:
        return None
    return x + y if gate is None else x + y * gate


def apply_rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary embedding, half-split ("rotate half") convention, computed in float32.

    x: [B, Q, N, E] (or [B, S, K, E] for keys); positions: int[B, Q]. Returns x's dtype.
    """
    e = x.shape[-1]
    freq_exponents = (2.0 / e) * jnp.arange(e // 2, dtype=jnp.float32)
    timescale = ROPE_MAX_WAVELENGTH**freq_exponents  # [E/2]
    radians = (positions[..., None] / timescale[None, None, :])[..., None, :]  # [B, Q, 1, E/2] float32
    sin, cos = jnp.sin(radians), jnp.cos(radians)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def embed_tokens(table: jax.Array, tokens: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Token embedding x sqrt(W) (the factor rounded to the table dtype: 45.25 for W = 2048 in bfloat16).

    table: [V, W]; tokens: int[B, T] (prompt slots) -> dtype[B, T, W].
    """
    x = table[(tokens,)]
    x = x * jnp.sqrt(table.shape[-1]).astype(x.dtype)
    return x.astype(dtype)


def _attention(ps, xs, positions, attn_mask, kv_cache):
    """Joint attention of the present experts.

    Returns (outs per expert, (k, v) full, (probs, masked_logits)); unused outputs are pruned by jit.
    """
    dtype = next(x.dtype for x in xs if x is not None)
    qs, ks, vs = [], [], []
    for p, x in zip(ps, xs):
        if x is None:
            continue
        qs.append(jnp.einsum("BQW,NWE->BQNE", x, p["q"].astype(dtype)))
        k, v = jnp.einsum("BSW,2KWE->2BSKE", x, p["kv"].astype(dtype))
        ks.append(k)
        vs.append(v)
    q, k, v = (jnp.concatenate(t, axis=1) for t in (qs, ks, vs))  # [B, Q, N, E], [B, Q, K, E] x2

    q = apply_rope(q, positions)
    q = q * q.shape[-1] ** -0.5  # scaled after RoPE
    k = apply_rope(k, positions)

    if kv_cache is not None:  # cached prefix keys/values come first
        cache_k, cache_v = kv_cache
        k = jnp.concatenate([cache_k, k], axis=1)  # [B, S, K, E]
        v = jnp.concatenate([cache_v, v], axis=1)

    b, nq, n, e = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, nq, kv_heads, n // kv_heads, e)  # [B, Q, K, G, E]; query head n = k * G + g
    logits = jnp.einsum("BQKGE,BSKE->BKGQS", q, k, preferred_element_type=jnp.float32)  # scaled scores
    if attn_mask.shape != (b, 1, nq, k.shape[1]):
        raise ValueError(f"attention mask {attn_mask.shape} does not fit q {q.shape} and k {k.shape}")
    masked_logits = jnp.where(attn_mask[:, :, None, :, :], logits, BIG_NEG)  # [B, K, G, Q, S] float32
    probs = jax.nn.softmax(masked_logits, axis=-1)  # float32; the one softmax that both actions and capture use

    encoded = jnp.einsum("BKGQS,BSKE->BQKGE", probs.astype(dtype), v).reshape(b, nq, n, e)
    outs, start = [], 0
    for p, x in zip(ps, xs):
        if x is None:
            outs.append(None)
            continue
        end = start + x.shape[1]
        outs.append(jnp.einsum("BQNE,NEW->BQW", encoded[:, start:end], p["out"].astype(dtype)))
        start = end
    return outs, (k, v), (probs, masked_logits)


def _mlp(x: jax.Array, p: Params) -> jax.Array:
    """gelu_tanh(x W_gate) * (x W_up) W_down, in x's dtype."""
    w = p["gating"].astype(x.dtype)  # [2, W, F]
    h = jax.nn.gelu(jnp.dot(x, w[0]), approximate=True) * jnp.dot(x, w[1])
    return jnp.dot(h, p["linear"].astype(x.dtype))


def _block(ps, xs, conds, positions, attn_mask, kv_cache):
    pre = [norm(x, p["pre_attention_norm"], c) if x is not None else (None, None) for p, x, c in zip(ps, xs, conds)]
    att, kv, attention = _attention(ps, [n for n, _ in pre], positions, attn_mask, kv_cache)
    xs = [_residual(x, a, gate) for x, a, (_, gate) in zip(xs, att, pre)]
    pre = [norm(x, p["pre_ffw_norm"], c) if x is not None else (None, None) for p, x, c in zip(ps, xs, conds)]
    xs = [_residual(x, _mlp(n, p) if x is not None else None, gate) for p, x, (n, gate) in zip(ps, xs, pre)]
    return xs, kv, attention


def transformer(
    llm: Params,
    xs: list[jax.Array | None],
    positions: jax.Array,
    attn_mask: jax.Array,
    *,
    kv_cache: tuple[jax.Array, jax.Array] | None = None,
    capture: CaptureFn | None = None,
    capture_state: Any = None,
    adarms_cond: list[jax.Array | None] | None = None,
    dtype: jnp.dtype,
    key_mask: jax.Array | None = None,
) -> tuple[list[jax.Array | None], tuple[jax.Array, jax.Array], Any]:
    """Run all layers (jax.lax.scan over the stacked layer axis) and the final norms.

    Args:
        llm: the `PaliGemma/llm` subtree.
        xs: per expert float[B, Q_i, W_i] or None (expert not run). Q = sum of present Q_i.
        positions: int[B, Q] RoPE positions.
        attn_mask: bool[B, Q, S]; S = cache length + Q.
        kv_cache: optional (k, v), each [L, B, S_cache, K, E], prepended to every layer's keys/values.
        capture: optional `capture(state, layer, probs, masked_logits) -> state`, called in every layer with the
            probabilities of the softmax that feeds the layer output.
        capture_state: initial state for `capture` (e.g. a preallocated buffer).
        adarms_cond: per expert float32[B, W_i] time conditioning for that expert's adaRMS norms, or None
            (plain RMSNorm; the expert's parameters must then have `scale` norms). pi0.5: [None, cond].
        dtype: activation dtype (inputs are cast to it, as openpi's `embed_dtype`).
        key_mask: optional bool[L, B, S]: in layer l, False hides key s from every query (ANDed with attn_mask;
            knockouts, `pi0viz.causal`); or bool[L, B, Q, S]: False hides key s from query q only. None: attn_mask
            alone, the same computation as without the argument.
    Returns:
        (outs per expert after final norm [B, Q_i, W_i] or None, (k, v) each [L, B, S, K, E], final capture_state).
    """
    xs = [x.astype(dtype) if x is not None else None for x in xs]
    mask = attn_mask[:, None, :, :]  # [B, 1, Q, S], broadcast over kv heads
    ps = [expert_layer_params(llm["layers"], i) if x is not None else None for i, x in enumerate(xs)]
    conds = list(adarms_cond) if adarms_cond is not None else [None] * len(xs)
    for i, (p, c) in enumerate(zip(ps, conds)):
        if p is not None and ("scale" in p["pre_attention_norm"]) != (c is None):
            raise ValueError(f"expert {i}: adaRMS conditioning {'missing' if c is None else 'given'} but its norms "
                             f"are {'adaptive' if c is None else 'plain'}")

    def layer(carry, p, per_layer):
        xs, state = carry
        index, cache, keys = per_layer
        if keys is None:
            layer_mask = mask
        else:  # [B, S] per key, or [B, Q, S] per query and key; broadcast over kv heads
            layer_mask = mask & (keys[:, None, None, :] if keys.ndim == 2 else keys[:, None, :, :])
        xs, kv, (probs, logits) = _block(p, xs, conds, positions, layer_mask, cache)
        if capture is not None:
            state = capture(state, index, probs, logits)
        return (xs, state), kv

    depth = jax.tree.leaves(ps)[0].shape[0]
    (xs, state), kv = scan_layers(layer, (xs, capture_state), ps, (jnp.arange(depth), kv_cache, key_mask))
    outs = [  # final norms; an adaRMS final norm's gate is unused, as in openpi
        norm(x, _norm_params(llm[_name("final_norm", i)]), c)[0] if x is not None else None
        for i, (x, c) in enumerate(zip(xs, conds))
    ]
    return outs, kv, state
