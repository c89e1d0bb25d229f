"""pi0 and pi0.5: prefix/suffix embedding, masks, positions, KV cache and the Euler flow-matching sampler,
with the attention of every denoising step and layer returned from the same softmax that makes the actions.

Letters: the project's axis vocabulary (docs/architecture.md; legend in `pi0viz.model`).
Token layout (pi0 LIBERO): prefix P = 3 cameras (C) x 256 image tokens + 48 prompt slots (T) = 816 (expert 0);
suffix Q = 1 state token + 50 action tokens (A) = 51 (expert 1). Suffix queries see S = P + Q = 867 keys.
pi0.5 (pi05_libero): P = 768 + 200 prompt slots = 968; suffix Q = the A = 10 action tokens alone (no state
token), all seeing each other; S = 978. The flow time conditions the action expert through adaRMS only.
Time convention (openpi): t = 1 is noise, t = 0 is data; dt = -1/num_steps; time is accumulated in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pi0viz.core.capture_options import CaptureOptions  # what sample_actions returns besides the actions
from pi0viz.model import gemma, siglip
from pi0viz.model.config import IMAGE_RESOLUTION, Pi0Config

Params = dict[str, Any]


@dataclasses.dataclass
class Observation:
    """Model inputs, batch-first (already preprocessed: 224 x 224 images in [-1, 1], normalized padded state).

    Attributes:
        images: name -> float32[B, 224, 224, 3] in [-1, 1]; names base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb.
        image_masks: name -> bool[B]; False = camera absent (its 256 keys are masked everywhere).
        state: float32[B, action_dim], normalized and zero-padded.
        tokenized_prompt: int32[B, max_token_len].
        tokenized_prompt_mask: bool[B, max_token_len]; False = padding slot.
    """

    images: dict[str, Any]
    image_masks: dict[str, Any]
    state: Any
    tokenized_prompt: Any
    tokenized_prompt_mask: Any


@dataclasses.dataclass
class KeyKnockout:
    """Prefix keys removed from the attention (knockouts: exact, the inputs are unchanged), per batch element.

    A removed key is hidden (masked as in `make_attn_mask`) from the queries of the chosen passes and layers; the
    token itself is still computed. Every batch element may remove other keys, in other passes and layers, so the
    conditions of a knockout study run as one batch (`pi0viz.causal`).

    Attributes:
        keys: bool[B, P]; True = prefix key removed (P: the camera slots' patches, then the prompt slots).
        prefix_layers: bool[B, L]; True = removed from every prefix query (the PaliGemma pass: image and prompt
            tokens reading each other) in that layer.
        expert_layers: bool[B, L]; True = removed from every suffix query (the action expert's pass, every
            denoising step) in that layer.
        prefix_queries: optional bool[B, P]; True = that prefix query loses the removed keys in the prefix layers
            (e.g. only the image tokens cannot read the prompt). None: every prefix query (the same computation as
            before the option existed).
    """

    keys: Any
    prefix_layers: Any
    expert_layers: Any
    prefix_queries: Any = None


@dataclasses.dataclass
class SampleOutput:
    """Result of `sample_actions`.

    Attributes:
        actions: float32[B, action_horizon, action_dim] (normalized, padded action space).
        attention: [D, L, B, K, G, Q, S] suffix attention probabilities (D = num_steps), or None without capture.
        attention_logits: same shape, masked pre-softmax scaled scores, or None.
        prefix_attention: [L, B, K, G, P, P] prefix-pass probabilities, or None.
        diffusion_times: float32[num_steps], the flow time of each step (1.0, 0.9, 0.79999995, ...).
    """

    actions: jax.Array
    attention: jax.Array | None
    attention_logits: jax.Array | None
    prefix_attention: jax.Array | None
    diffusion_times: jax.Array


# ------------------------------------------------------------------------------------------------------
# Masks, positions, embeddings


def make_attn_mask(input_mask: jax.Array, mask_ar: jax.Array) -> jax.Array:
    """big_vision block-causal mask: token i sees token j iff cumsum(mask_ar)[j] <= cumsum(mask_ar)[i], both valid.

    mask_ar rows: [0 0 0 0] = fully bidirectional; [1 1 1 1] = causal; pi0 suffix [1 1 0 0 ...] = the state token
    sees only itself (and the prefix), every action token sees the state and all actions.

    Args:
        input_mask: bool[B, S]; mask_ar: bool[S] or bool[B, S] (S tokens, each both a query and a key).
    Returns:
        bool[B, S, S] (query, key).
    """
    mask_ar = jnp.broadcast_to(mask_ar, input_mask.shape)
    cumsum = jnp.cumsum(mask_ar, axis=1)
    causal = cumsum[:, None, :] <= cumsum[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return causal & valid


def posemb_sincos(t: jax.Array, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> jax.Array:
    """Sine-cosine embedding of scalar times t float32[B] -> float32[B, dim], [sin | cos] halves."""
    fraction = jnp.linspace(0.0, 1.0, dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    freq = 1.0 / period * 2 * jnp.pi
    arg = jnp.einsum("i,j->ij", t, freq, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


def _linear(x: jax.Array, p: Params) -> jax.Array:
    """nnx.Linear: dtypes promote (float32 state/actions x bfloat16 weights -> float32)."""
    return jnp.dot(x, p["kernel"]) + p["bias"]


def embed_prefix(params: Params, config: Pi0Config, obs: Observation) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Image tokens of every camera (in `config.image_keys` order) then the prompt embeddings.

    Returns:
        tokens dtype[B, P, W_0] (W_0: the PaliGemma expert's width), input_mask bool[B, P],
        ar_mask bool[P] (all False: bidirectional prefix).
    """
    dtype = config.compute_dtype
    img = params["PaliGemma"]["img"]
    tokens, masks = [], []
    for name in config.image_keys:
        t = siglip.encode_images(img, obs.images[name], config.siglip, dtype)  # [B, 256, W_0]
        tokens.append(t)
        masks.append(jnp.broadcast_to(obs.image_masks[name][:, None], t.shape[:2]))
    table = params["PaliGemma"]["llm"]["embedder"]["input_embedding"]
    tokens.append(gemma.embed_tokens(table, obs.tokenized_prompt, dtype))  # [B, T, W_0]
    masks.append(obs.tokenized_prompt_mask)
    tokens = jnp.concatenate(tokens, axis=1)
    input_mask = jnp.concatenate(masks, axis=1)
    return tokens, input_mask, jnp.zeros(tokens.shape[1], dtype=bool)


def time_conditioning(params: Params, time: jax.Array, width: int) -> jax.Array:
    """pi0.5's adaRMS conditioning: swish(time_mlp_out(swish(time_mlp_in(posemb_sincos(t))))).

    time: float32[B] -> float32[B, width] (weights promote to float32, as openpi's nnx.Linear), one vector per
    batch element shared by every layer's adaRMS norms.
    """
    emb = posemb_sincos(time, width)
    h = jax.nn.swish(_linear(emb, params["time_mlp_in"]))
    return jax.nn.swish(_linear(h, params["time_mlp_out"]))


def embed_suffix(
    params: Params, config: Pi0Config, state: jax.Array, x_t: jax.Array, time: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """Suffix tokens of one denoising step.

    pi0: the state token, then action tokens mixed with the time embedding by an MLP.
    pi0.5: the action tokens alone (`action_in_proj(x_t)`; the state is not read), plus the adaRMS conditioning.

    Args:
        state: float32[B, action_dim]; x_t: float32[B, action_horizon, action_dim]; time: float32[B].
    Returns:
        tokens float32[B, Q, W_1] (W_1: the action expert's width), input_mask bool[B, Q] (all True),
        ar_mask bool[Q] (see `suffix_ar_mask`), adarms_cond float32[B, W_1] for pi0.5 or None for pi0.
    """
    action_tokens = _linear(x_t, params["action_in_proj"])  # [B, A, W_1]
    width = action_tokens.shape[-1]
    if config.pi05:
        tokens, cond = action_tokens, time_conditioning(params, time, width)
    else:
        state_token = _linear(state, params["state_proj"])[:, None, :]  # [B, 1, W_1]
        time_emb = posemb_sincos(time, width)  # [B, W_1]
        time_tokens = jnp.broadcast_to(time_emb[:, None, :], action_tokens.shape)
        h = _linear(jnp.concatenate([action_tokens, time_tokens], axis=-1), params["action_time_mlp_in"])
        h = _linear(jax.nn.swish(h), params["action_time_mlp_out"])  # [B, A, W_1]
        tokens, cond = jnp.concatenate([state_token.astype(h.dtype), h], axis=1), None
    input_mask = jnp.ones(tokens.shape[:2], dtype=bool)
    return tokens, input_mask, suffix_ar_mask(config), cond


def suffix_ar_mask(config: Pi0Config) -> jax.Array:
    """bool[Q]. pi0: [1 (state), 1 (first action), 0, ...]: state sees only itself, actions see state + all
    actions. pi0.5: [1, 0, ...]: the action tokens see each other."""
    return jnp.array([True] * config.num_state_tokens + [True] + [False] * (config.action_horizon - 1))


# ------------------------------------------------------------------------------------------------------
# Sampling


def diffusion_times(num_steps: int) -> np.ndarray:
    """float32[D]: the time t of each denoising step, as openpi's while_loop visits them: t = 1, then t += dt in
    float32 while t >= -dt / 2. The same values as a bundle's `diffusion_times` (and `SampleOutput.diffusion_times`)."""
    dt = np.float32(-1.0 / num_steps)
    t, times = np.float32(1.0), []
    while t >= -dt / np.float32(2):
        times.append(t)
        t = np.float32(t + dt)
    return np.asarray(times, dtype=np.float32)


def _reduce(x: jax.Array, capture: CaptureOptions, *, skip_rows: int, num_keys: int) -> jax.Array:
    """Apply the capture reductions to one layer's [B, K, G, Q, S] probabilities (or logits)."""
    x = x[..., skip_rows:, :num_keys]
    if capture.fuse_heads:  # K = G = 1
        # An elementwise maximum over the 8 head slices fuses into one pass; XLA:CPU's reduce over these
        # non-minor axes cost ~25 % of a tiny-config call. Same values as jnp.max (max is exact).
        b, k, g, t, s = x.shape
        heads = x.reshape(b, k * g, t, s)
        fused = functools.reduce(jnp.maximum, [heads[:, n] for n in range(k * g)])
        x = fused[:, None, None]
    return x.astype(capture.dtype)


def _capture_into(buffers: dict, index: tuple, probs, logits, capture: CaptureOptions, **reduce_kw) -> dict:
    """Write one layer's reduced attention into preallocated buffers at `index` (e.g. (step, layer)), in place."""
    layer = {"probs": probs, "logits": logits}
    out = {}
    for name, buf in buffers.items():
        x = _reduce(layer[name], capture, **reduce_kw)
        x = x.reshape((1,) * len(index) + x.shape)
        out[name] = jax.lax.dynamic_update_slice(buf, x, (*index, *([0] * (x.ndim - len(index)))))
    return out


def _capture_buffers(lead: tuple[int, ...], layer_shape: tuple[int, ...], capture: CaptureOptions, names) -> dict:
    """Zeroed buffers [*lead, B, K', G', Q', S'] for the reduced attention (K' = G' = 1 when heads are fused)."""
    b, k, g, q, s_ = layer_shape
    if capture.fuse_heads:
        k = g = 1
    return {name: jnp.zeros((*lead, b, k, g, q, s_), capture.dtype) for name in names}


def _check_observation(config: Pi0Config, obs: Observation) -> None:
    missing = [k for k in config.image_keys if k not in obs.images or k not in obs.image_masks]
    if missing:
        raise ValueError(f"observation lacks camera(s) {missing}; got images {list(obs.images)}, "
                         f"masks {list(obs.image_masks)} (pass zeros and mask False for an absent camera)")
    b = obs.state.shape[0]
    for k in config.image_keys:
        shape = tuple(obs.images[k].shape)
        if shape != (b, *IMAGE_RESOLUTION, 3):
            raise ValueError(
                f"image {k!r} has shape {shape}, expected {(b, *IMAGE_RESOLUTION, 3)} (resize with pad first)"
            )
    if tuple(obs.state.shape) != (b, config.action_dim):
        raise ValueError(f"state has shape {tuple(obs.state.shape)}, expected {(b, config.action_dim)} (zero-pad it)")
    if tuple(obs.tokenized_prompt.shape) != (b, config.max_token_len):
        raise ValueError(f"tokenized_prompt has shape {tuple(obs.tokenized_prompt.shape)}, "
                         f"expected {(b, config.max_token_len)}")


def _check_knockout(config: Pi0Config, knockout: KeyKnockout, b: int) -> dict:
    """The knockout's arrays as bool jax arrays, shapes checked: keys [B, P], prefix/expert layers [B, L]."""
    shapes = {"keys": (b, config.prefix_len), "prefix_layers": (b, config.llm.depth),
              "expert_layers": (b, config.llm.depth)}
    if knockout.prefix_queries is not None:
        shapes["prefix_queries"] = (b, config.prefix_len)
    out = {}
    for name, shape in shapes.items():
        x = jnp.asarray(getattr(knockout, name), bool)
        if tuple(x.shape) != shape:
            raise ValueError(f"knockout {name} has shape {tuple(x.shape)}, expected {shape}")
        out[name] = x
    return out


def sample_actions(
    params: Params,
    config: Pi0Config,
    rng: jax.Array,
    observation: Observation,
    *,
    num_steps: int = 10,
    noise: jax.Array | None = None,
    capture: CaptureOptions | None = None,
    knockout: KeyKnockout | None = None,
) -> SampleOutput:
    """Sample an action chunk with `num_steps` Euler steps of the flow, optionally capturing attention.

    Args:
        params: the openpi parameter tree (see `checkpoint.param_shapes`).
        config: model configuration (static).
        rng: PRNG key for the initial noise (unused if `noise` is given).
        observation: preprocessed inputs, batch B.
        num_steps: Euler steps (static).
        noise: optional float32[B, action_horizon, action_dim] initial x at t = 1.
        capture: None = no attention returned and no extra work; else see `CaptureOptions`.
        knockout: None = the model as it is; else prefix keys removed from the attention (`KeyKnockout`). An
            all-False knockout gives the same actions, bit for bit.
    Returns:
        SampleOutput; with capture, attention has shape [D, L, B, K, G, Q, S] (D = num_steps).
    """
    _check_observation(config, observation)
    b = observation.state.shape[0]
    if noise is None:
        noise = jax.random.normal(rng, (b, config.action_horizon, config.action_dim), dtype=jnp.float32)
    obs = dataclasses.asdict(observation)
    noise = jnp.asarray(noise, jnp.float32)
    knock = None if knockout is None else _check_knockout(config, knockout, b)
    actions, captured, times = _sample_jit(params, obs, noise, config, int(num_steps), capture, knock)
    captured = captured or {}
    return SampleOutput(
        actions=actions,
        attention=captured.get("probs"),
        attention_logits=captured.get("logits"),
        prefix_attention=captured.get("prefix"),
        diffusion_times=times,
    )


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _sample_jit(params, obs, noise, config: Pi0Config, num_steps: int, capture: CaptureOptions | None,
                knockout: dict | None = None):
    obs = Observation(**obs)
    dtype = config.compute_dtype
    llm = params["PaliGemma"]["llm"]

    # 1. Prefix pass (PaliGemma expert only): fills the KV cache [L, B, P, K, E]; keys already RoPE-rotated.
    prefix_tokens, prefix_mask, prefix_ar = embed_prefix(params, config, obs)
    prefix_attn = make_attn_mask(prefix_mask, prefix_ar)  # [B, P, P]
    prefix_positions = jnp.cumsum(prefix_mask, axis=1) - 1
    depth, heads = config.llm.depth, config.llm.num_heads
    kv_heads = config.llm.num_kv_heads
    b, p_len, s_len = noise.shape[0], prefix_tokens.shape[1], config.suffix_len

    prefix_capture, prefix_buffers = None, None
    if capture is not None and capture.prefix:
        prefix_buffers = _capture_buffers((depth,), (b, kv_heads, heads // kv_heads, p_len, p_len), capture, ["probs"])

        def prefix_capture(buffers, layer, probs, logits):
            return _capture_into(buffers, (layer,), probs, logits, capture, skip_rows=0, num_keys=p_len)

    prefix_keys = suffix_keys = None
    if knockout is not None:  # [L, B, S] keys each layer keeps: a removed key where its pass and layer say so
        removed = knockout["keys"][None, :, :]  # [1, B, P]
        prefix_keys = ~(removed & knockout["prefix_layers"].T[:, :, None])
        if "prefix_queries" in knockout:  # [L, B, P (queries), P (keys)]: only the chosen queries lose the keys
            prefix_keys = ~(removed[:, :, None, :] & knockout["prefix_queries"][None, :, :, None]
                            & knockout["prefix_layers"].T[:, :, None, None])
        suffix_keys = jnp.concatenate(
            [~(removed & knockout["expert_layers"].T[:, :, None]), jnp.ones((depth, b, s_len), bool)], axis=-1)

    _, kv_cache, prefix_buffers = gemma.transformer(
        llm, [prefix_tokens, None], prefix_positions, prefix_attn, capture=prefix_capture,
        capture_state=prefix_buffers, dtype=dtype, key_mask=prefix_keys,
    )

    # 2. Suffix masks and positions: the same in every step.
    suffix_mask = jnp.ones((b, s_len), dtype=bool)
    full_mask = jnp.concatenate(  # [B, Q, P + Q]: every valid prefix key, then block-causal suffix keys
        [jnp.broadcast_to(prefix_mask[:, None, :], (b, s_len, p_len)),
         make_attn_mask(suffix_mask, suffix_ar_mask(config))], axis=-1
    )
    suffix_positions = jnp.sum(prefix_mask, axis=-1)[:, None] + jnp.cumsum(suffix_mask, axis=-1) - 1

    # 3. Euler steps over a static count (openpi's while_loop visits exactly these times); time is a float32 carry
    # accumulated as time + dt, so every step sees the same time value as openpi.
    dt = -1.0 / num_steps
    steps = len(diffusion_times(num_steps))
    buffers = None
    if capture is not None:  # [D, L, B, K, G, Q, S], filled in place by every layer of every step
        reduce_kw = dict(skip_rows=config.num_state_tokens if capture.action_rows_only else 0,  # pi0's state row
                         num_keys=p_len if capture.prefix_keys_only else p_len + s_len)
        layer_shape = (b, kv_heads, heads // kv_heads, s_len - reduce_kw["skip_rows"], reduce_kw["num_keys"])
        buffers = _capture_buffers((steps, depth), layer_shape, capture, ["probs", "logits"] if capture.logits
                                   else ["probs"])

    def step(carry, index):
        x_t, time, buffers = carry
        suffix_capture = None
        if capture is not None:
            def suffix_capture(buffers, layer, probs, logits):
                return _capture_into(buffers, (index, layer), probs, logits, capture, **reduce_kw)

        tokens, _, _, cond = embed_suffix(params, config, obs.state, x_t, jnp.broadcast_to(time, (b,)))
        (_, suffix_out), _, buffers = gemma.transformer(
            llm, [None, tokens], suffix_positions, full_mask, kv_cache=kv_cache, capture=suffix_capture,
            capture_state=buffers, adarms_cond=[None, cond], dtype=dtype, key_mask=suffix_keys,
        )
        v_t = _linear(suffix_out[:, -config.action_horizon :], params["action_out_proj"])  # compute dtype
        return (x_t + dt * v_t, time + dt, buffers), time

    (x_0, _, buffers), times = jax.lax.scan(step, (noise, jnp.float32(1.0), buffers), jnp.arange(steps))
    captured = None
    if capture is not None:
        captured = dict(buffers)
        if prefix_buffers is not None:
            captured["prefix"] = prefix_buffers["probs"]
    return x_0.astype(jnp.float32), captured, times


def num_params(params: Params) -> int:
    """Total number of parameter values."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
