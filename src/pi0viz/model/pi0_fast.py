"""pi0-FAST: one PaliGemma prefills the prefix (cameras + a prompt that carries the discretized state), then
generates FAST action tokens greedily, one per decode step, with a kv cache. Every decode step's attention row
(the new token as the one query, over all kv-cache slots) is returned from the same softmax that picks the tokens.

Letters: the project's axis vocabulary (docs/architecture.md; legend in `pi0viz.model`), plus J decode steps.
Token layout (tiny reference): prefix P = 3 cameras (C) x 256 image tokens + 64 prompt slots (T) = 832;
kv cache S = P + J = 832 + 24 = 856 slots: the ALIGNED prefix in slots [0, P), decode step j's token in slot P + j.

The order of one call, as openpi's `Pi0FAST.sample_actions` (commit 15a9616, the recorded reference):
 1. embed: SigLIP tokens of each camera, then the prompt embeddings; input mask, ar mask (0 images, then the
    prompt's token_ar_mask: 0 = bidirectional prefix, 1 = causal postfix, used in training only).
 2. prefix-LM mask (`make_attn_mask`), then left-to-right alignment: each element's P slots are rolled left by
    shift = 1 + index of its last valid slot, so the prompt padding moves to the front and the last valid token
    sits in slot P - 1. prefill_len = valid slots; prefix_start = P - prefill_len.
 3. prefill: all P aligned slots, positions cumsum(mask) - 1, mask padded with J False columns (so the cache has
    S slots and a fully masked query row is uniform 1/S over all of them). The last slot's logits give token 0.
 4. decode step j: token j = argmax of the last logits, written to the output; embedded, run through every layer
    as one query at position prefill_len + j + 1, its k/v written to slot P + j, mask row
    (slot >= prefix_start) & (slot <= P + j). Its logits give token j + 1. Stop once every element emitted EOS
    in the same step, or after J steps. The EOS step itself runs (its attention row is returned).
The decode mask never reads the prefix mask: with a masked camera at or after prefix_start its keys ARE attended
(openpi's quirk, reproduced; its FAST policies never mask cameras).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pi0viz.core.capture_options import CaptureOptions
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.errors import CheckpointError
from pi0viz.model import gemma, siglip
from pi0viz.model.checkpoint import load_params
from pi0viz.model.config import IMAGE_RESOLUTION, Pi0Config, Pi0FastConfig
from pi0viz.model.init import flatten, init_params, param_specs, unflatten
from pi0viz.model.pi0 import make_attn_mask
from pi0viz.model.scan import scan_layers

Params = dict[str, Any]
EOS_TOKEN = 1  # PaliGemma's end of sequence: decoding stops when every element emits it in the same step


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class FastObservation:
    """pi0-FAST inputs, batch-first, preprocessed (224 x 224 images in [-1, 1]; the state is already in the prompt).
    A pytree: it passes through jax.jit / jax.eval_shape as it is.

    Attributes:
        images: name -> float32[B, 224, 224, 3] in [-1, 1], for every name in `config.image_keys`.
        image_masks: name -> bool[B]; False = camera absent (see the module docstring for what decoding does).
        tokenized_prompt: int32[B, T]; the prompt ("Task: ..., State: ...;\\n" at inference), pad id 0.
        tokenized_prompt_mask: bool[B, T]; False = padding slot.
        token_ar_mask: int32[B, T]; 0 = bidirectional, 1 = causal (the training postfix); all 0 at inference.
    """

    images: dict[str, Any]
    image_masks: dict[str, Any]
    tokenized_prompt: Any
    tokenized_prompt_mask: Any
    token_ar_mask: Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class FastSampleOutput:
    """Result of `sample_tokens` (J = config.max_decoding_steps, S = P + J kv-cache slots).

    Attributes:
        tokens: int32[B, J] generated PaliGemma ids; 0 after the last step run (FAST token t = 257023 - id).
        num_steps: int32[] decode steps run (< J iff every element emitted EOS in the same step).
        key_len: int32[J] = P + j + 1: keys at or after it are empty cache slots at step j (exactly 0).
        prefix_start: int32[B] = P - prefill_len: the first slot the decode steps attend to.
        key_source: int32[B, S]: the unaligned prefix index each kv-cache slot holds (0..P-1: camera c's patch i is
            c x 256 + i, then the prompt slots), or P + j for decode step j's token.
        attention: [J, L, B, K, G, 1, S] decode attention rows (reduced as `capture` says; S -> P with
            prefix_keys_only, K = G = 1 with fuse_heads); rows of steps not run are 0; None without capture.
        prefill_attention: [L, B, K, G, rows, S] the prefill attention of the last `prefill_rows` aligned query
            rows, or None.
        logits: float32[J, B, V] the logits each token was picked from (step 0: the prefill's last slot), or None.
        top_logits / top_ids: float32 / int32[J, B, 5] the 5 largest logits of every step and their ids (0 for
            steps not run).
    """

    tokens: jax.Array
    num_steps: jax.Array
    key_len: jax.Array
    prefix_start: jax.Array
    key_source: jax.Array
    attention: jax.Array | None
    prefill_attention: jax.Array | None
    logits: jax.Array | None
    top_logits: jax.Array
    top_ids: jax.Array


# ------------------------------------------------------------------------------------------------------
# Parameters


def fast_param_shapes(config: Pi0FastConfig) -> dict[str, tuple[int, ...]]:
    """pi0-FAST's parameter tree ('/'-joined openpi path -> shape): SigLIP under `PaliGemma/img`, one Gemma under
    `PaliGemma/llm` (the pi0 tree without the action expert and the action/state projections)."""
    twin = Pi0Config(paligemma_variant=config.paligemma_variant, action_expert_variant=config.paligemma_variant,
                     siglip_variant=config.siglip_variant, vocab_size=config.vocab_size)
    llm_names = ("attn/q_einsum", "attn/kv_einsum", "attn/attn_vec_einsum", "mlp", "pre_attention_norm",
                 "pre_ffw_norm", "final_norm")
    expert_1 = tuple(f"{name}_1/" for name in llm_names)
    return {path: shape for path, (shape, _, _) in param_specs(twin).items()
            if path.startswith("PaliGemma/") and not any(name in path for name in expert_1)}


def abstract_fast_params(config: Pi0FastConfig) -> Params:
    """The parameter tree as jax.ShapeDtypeStruct leaves in the config's dtype (nothing allocated)."""
    tree: Params = {}
    for path, shape in fast_param_shapes(config).items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = jax.ShapeDtypeStruct(shape, config.compute_dtype)
    return tree


def load_fast_params(params_dir: str | os.PathLike, config: Pi0FastConfig, *,
                     dtype: str | jnp.dtype | None = None) -> Params:
    """Restore an openpi pi0-FAST `<checkpoint>/params` folder (orbax, top-level key "params") without openpi.

    dtype: cast every leaf while reading (None keeps the stored dtype). Raises CheckpointError when a parameter is
    missing, extra or of another shape than `config` expects.
    """
    params = load_params(params_dir, dtype=dtype)
    have = {path: tuple(leaf.shape) for path, leaf in flatten(params).items()}
    want = fast_param_shapes(config)
    for path, shape in want.items():
        if have.get(path) != shape:
            found = "missing" if path not in have else f"shape {list(have[path])}"
            raise CheckpointError(f"{params_dir}: parameter {path}: checkpoint has {found}, the pi0-FAST config "
                                  f"({config.paligemma_variant}, SigLIP {config.siglip_variant}) expects {list(shape)}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise CheckpointError(f"{params_dir}: {len(extra)} parameters a pi0-FAST model does not have, e.g. "
                              f"{extra[0]} (a pi0 / pi0.5 checkpoint?)")
    return params


def init_fast_params(config: Pi0FastConfig, rng: jax.Array) -> Params:
    """Random pi0-FAST parameters (pi0viz.model.init's scales, seeded by `rng`): the demo's untrained tiny model."""
    twin = Pi0Config(paligemma_variant=config.paligemma_variant, action_expert_variant=config.paligemma_variant,
                     siglip_variant=config.siglip_variant, vocab_size=config.vocab_size, dtype=config.dtype)
    want = fast_param_shapes(config)
    return unflatten({path: leaf for path, leaf in flatten(init_params(twin, rng)).items() if path in want})


# ------------------------------------------------------------------------------------------------------
# Prefix: embedding, prefix-LM mask, alignment


def embed_inputs(params: Params, config: Pi0FastConfig, obs: FastObservation) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Image tokens of every camera (in `config.image_keys` order), then the prompt embeddings (unaligned).

    Returns:
        tokens dtype[B, P, W], input_mask bool[B, P], ar_mask int32[B, P] (0 for image tokens, then token_ar_mask).
    """
    dtype = config.compute_dtype
    tokens, masks = [], []
    for name in config.image_keys:
        t = siglip.encode_images(params["PaliGemma"]["img"], obs.images[name], config.siglip, dtype)  # [B, 256, W]
        tokens.append(t)
        masks.append(jnp.broadcast_to(jnp.asarray(obs.image_masks[name])[:, None], t.shape[:2]))
    table = params["PaliGemma"]["llm"]["embedder"]["input_embedding"]  # [V, W]
    tokens.append(gemma.embed_tokens(table, obs.tokenized_prompt, dtype))  # [B, T, W]
    masks.append(jnp.asarray(obs.tokenized_prompt_mask, bool))
    input_mask = jnp.concatenate(masks, axis=1)
    num_image = input_mask.shape[1] - masks[-1].shape[1]
    ar_mask = jnp.concatenate([jnp.zeros((input_mask.shape[0], num_image), jnp.int32),
                               jnp.asarray(obs.token_ar_mask, jnp.int32)], axis=1)
    return jnp.concatenate(tokens, axis=1), input_mask, ar_mask


def align_shift(input_mask: jax.Array) -> jax.Array:
    """int32[B]: 1 + the index of each element's last valid slot (0 valid slots gives 1, as openpi)."""
    p = input_mask.shape[1]
    return (jnp.max(input_mask * jnp.arange(p, dtype=jnp.int32), axis=1) + 1).astype(jnp.int32)


def left_to_right_align(tokens: jax.Array, input_mask: jax.Array, attn_mask: jax.Array
                        ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Roll each element's P slots left by its `align_shift`: aligned slot i holds unaligned slot (i + shift) % P.

    tokens [B, P, W], input_mask bool[B, P], attn_mask bool[B, P, P] -> the same shapes aligned, and the source
    index int32[B, P] of every aligned slot.
    """
    p = input_mask.shape[1]
    source = (jnp.arange(p, dtype=jnp.int32)[None, :] + align_shift(input_mask)[:, None]) % p  # [B, P]
    tokens = jnp.take_along_axis(tokens, source[:, :, None], axis=1)
    input_mask = jnp.take_along_axis(input_mask, source, axis=1)
    attn_mask = jnp.take_along_axis(attn_mask, source[:, :, None], axis=1)  # query rows
    attn_mask = jnp.take_along_axis(attn_mask, source[:, None, :], axis=2)  # key columns
    return tokens, input_mask, attn_mask, source


# ------------------------------------------------------------------------------------------------------
# The decoder: one Gemma layer over a fixed-size kv cache


def _layer(p: Params, x: jax.Array, positions: jax.Array, mask: jax.Array, cache: tuple[jax.Array, jax.Array],
           slot: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array]:
    """One block. The Q new tokens' keys/values are written into the cache at `slot`, then the queries attend over
    all S cache slots (openpi's gemma_fast: empty slots hold k = v = 0 and are masked).

    x dtype[B, Q, W]; positions int32[B, Q]; mask bool[B, Q, S]; cache (k, v) each [B, S, K, E].
    Returns (x [B, Q, W], the updated cache, probs float32[B, K, G, Q, S]).
    """
    dtype = x.dtype
    h = gemma.rms_norm(x, p["pre_attention_norm"]["scale"])
    q = jnp.einsum("BQW,NWE->BQNE", h, p["q"].astype(dtype))
    k, v = jnp.einsum("BQW,2KWE->2BQKE", h, p["kv"].astype(dtype))
    # RoPE in float32; q stays float32 after it (gemma_fast does not cast back), scaled after the rotation.
    q = gemma.apply_rope(q.astype(jnp.float32), positions) * q.shape[-1] ** -0.5
    k = gemma.apply_rope(k.astype(jnp.float32), positions)
    cache_k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, slot, 0, 0))  # [B, S, K, E]
    cache_v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, slot, 0, 0))

    b, nq, n, e = q.shape
    kv_heads = cache_k.shape[2]
    q = q.reshape(b, nq, kv_heads, n // kv_heads, e)  # [B, Q, K, G, E]; query head n = k * G + g
    logits = jnp.einsum("BQKGE,BSKE->BKGQS", q, cache_k, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, None, None, :, :], logits, gemma.BIG_NEG)  # [B, K, G, Q, S]
    probs = jax.nn.softmax(logits, axis=-1)  # float32; masked keys exactly 0
    encoded = jnp.einsum("BKGQS,BSKE->BQKGE", probs.astype(dtype), cache_v).reshape(b, nq, n, e)
    x = x + jnp.einsum("BQNE,NEW->BQW", encoded, p["out"].astype(dtype))
    x = x + gemma._mlp(gemma.rms_norm(x, p["pre_ffw_norm"]["scale"]), p)
    return x, (cache_k, cache_v), probs


def _decoder(llm: Params, x: jax.Array, positions: jax.Array, mask: jax.Array, cache: tuple[jax.Array, jax.Array],
             slot: jax.Array, keep_rows: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array]:
    """All layers (scan over the stacked weights), then the final norm and the tied-embedding logits of the last
    query. cache (k, v) each [L, B, S, K, E]. Returns (logits [B, V], the updated cache, the probabilities of the
    last `keep_rows` queries float32[L, B, K, G, keep_rows, S])."""
    ps = gemma.expert_layer_params(llm["layers"], 0)

    def layer(x, p, cache_l):
        x, cache_l, probs = _layer(p, x, positions, mask, cache_l, slot)
        return x, (cache_l, probs[..., probs.shape[-2] - keep_rows:, :])

    x, (cache, probs) = scan_layers(layer, x, ps, cache)
    table = llm["embedder"]["input_embedding"]  # [V, W]
    last = gemma.rms_norm(x[:, -1], llm["final_norm"]["scale"])  # [B, W]
    return jnp.dot(last, table.astype(last.dtype).T), cache, probs


def prefill(params: Params, config: Pi0FastConfig, obs: FastObservation, *, keep_rows: int = 0) -> dict[str, jax.Array]:
    """Embed, mask, align and run the prefix through the LLM: the kv cache before the first decode step.

    Returns a dict: logits float32[B, V] (they pick token 0), cache (k, v) each [L, B, S, K, E] (k after RoPE;
    slots >= P still 0), prefix_mask bool[B, P] (aligned), prefix_attn_mask bool[B, P, S] (aligned, padded),
    positions int32[B, P], prefill_len / prefix_start / shift int32[B], source int32[B, P] (unaligned index of
    every aligned slot), probs float32[L, B, K, G, keep_rows, S] (the last `keep_rows` aligned query rows).
    """
    dtype = config.compute_dtype
    llm = params["PaliGemma"]["llm"]
    tokens, input_mask, ar_mask = embed_inputs(params, config, obs)
    attn_mask = make_attn_mask(input_mask, ar_mask)  # [B, P, P] prefix-LM
    shift = align_shift(input_mask)
    tokens, input_mask, attn_mask, source = left_to_right_align(tokens, input_mask, attn_mask)
    p_len, s_len = config.prefix_len, config.cache_len
    prefill_len = jnp.sum(input_mask, axis=1, dtype=jnp.int32)
    attn_mask = jnp.pad(attn_mask, ((0, 0), (0, 0), (0, s_len - p_len)))  # [B, P, S]: empty decode slots masked
    positions = jnp.cumsum(input_mask, axis=1, dtype=jnp.int32) - 1  # front padding -1
    b, llm_cfg = tokens.shape[0], config.llm
    empty = jnp.zeros((llm_cfg.depth, b, s_len, llm_cfg.num_kv_heads, llm_cfg.head_dim), dtype)
    logits, cache, probs = _decoder(llm, tokens.astype(dtype), positions, attn_mask, (empty, empty),
                                    jnp.int32(0), keep_rows)
    return dict(logits=logits.astype(jnp.float32), cache=cache, prefix_mask=input_mask, prefix_attn_mask=attn_mask,
                positions=positions, prefill_len=prefill_len, prefix_start=p_len - prefill_len,
                shift=shift, source=source, probs=probs)


# ------------------------------------------------------------------------------------------------------
# Greedy decoding with capture


def _reduce(probs: jax.Array, capture: CaptureOptions, num_keys: int) -> jax.Array:
    """Capture reductions of [..., K, G, Q, S] probabilities: keys [:num_keys], max over heads, dtype."""
    x = probs[..., :num_keys]
    if capture.fuse_heads:
        x = jnp.max(x, axis=(-4, -3), keepdims=True)
    return x.astype(capture.dtype)


def _check_observation(config: Pi0FastConfig, obs: FastObservation) -> None:
    missing = [k for k in config.image_keys if k not in obs.images or k not in obs.image_masks]
    if missing:
        raise ValueError(f"observation lacks camera(s) {missing}; got images {list(obs.images)} (pass zeros and "
                         "mask False for an absent camera)")
    b = np.shape(obs.tokenized_prompt)[0]
    for k in config.image_keys:
        if tuple(np.shape(obs.images[k])) != (b, *IMAGE_RESOLUTION, 3):
            raise ValueError(f"image {k!r} has shape {tuple(np.shape(obs.images[k]))}, expected "
                             f"{(b, *IMAGE_RESOLUTION, 3)} (resize with pad first)")
    for name in ("tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask"):
        if tuple(np.shape(getattr(obs, name))) != (b, config.max_token_len):
            raise ValueError(f"{name} has shape {tuple(np.shape(getattr(obs, name)))}, expected "
                             f"{(b, config.max_token_len)}")


def sample_tokens(
    params: Params,
    config: Pi0FastConfig,
    observation: FastObservation,
    *,
    capture: CaptureOptions | None = None,
    prefill_rows: int = 0,
    keep_logits: bool = False,
) -> FastSampleOutput:
    """Greedy decoding (openpi's temperature 0) of up to J = config.max_decoding_steps tokens.

    Args:
        params: the openpi pi0-FAST parameter tree (`load_fast_params`).
        config: model configuration (static).
        observation: preprocessed inputs, batch B.
        capture: None = no decode attention returned; else the decode rows reduced as it says (fuse_heads,
            dtype, prefix_keys_only; the other options have no meaning here).
        prefill_rows: also return the prefill attention of the last this many aligned query rows (static).
        keep_logits: also return every step's logits float32[J, B, V] (full size: 1 MB per step and element).
    Returns:
        FastSampleOutput.
    """
    _check_observation(config, observation)
    obs = {f.name: jax.tree.map(jnp.asarray, getattr(observation, f.name)) for f in dataclasses.fields(observation)}
    out = _sample_jit(params, obs, config, capture, int(prefill_rows), bool(keep_logits))
    return FastSampleOutput(**out)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _sample_jit(params, obs, config: Pi0FastConfig, capture: CaptureOptions | None, prefill_rows: int,
                keep_logits: bool) -> dict:
    obs = FastObservation(**obs)
    dtype = config.compute_dtype
    llm = params["PaliGemma"]["llm"]
    table = llm["embedder"]["input_embedding"]
    pre = prefill(params, config, obs, keep_rows=prefill_rows)
    p_len, s_len, j_len = config.prefix_len, config.cache_len, config.max_decoding_steps
    b = pre["logits"].shape[0]
    slots = jnp.arange(s_len, dtype=jnp.int32)
    num_keys = p_len if capture is not None and capture.prefix_keys_only else s_len

    buffers = {
        "tokens": jnp.zeros((b, j_len), jnp.int32),
        "top_logits": jnp.zeros((j_len, b, 5), jnp.float32),
        "top_ids": jnp.zeros((j_len, b, 5), jnp.int32),
    }
    if keep_logits:
        buffers["logits"] = jnp.zeros((j_len, b, config.vocab_size), jnp.float32)
    if capture is not None:  # [J, L, B, K', G', 1, S'], one (step, all layers) slice written per step
        llm_cfg = config.llm
        k, g = (1, 1) if capture.fuse_heads else (llm_cfg.num_kv_heads, llm_cfg.num_heads // llm_cfg.num_kv_heads)
        buffers["attention"] = jnp.zeros((j_len, llm_cfg.depth, b, k, g, 1, num_keys), capture.dtype)

    def cond(carry):
        _, _, all_eos, step, _ = carry
        return ~all_eos & (step < j_len)

    def step(carry):
        logits, cache, _, j, buffers = carry  # logits float32[B, V]: the ones token j is picked from
        buffers = dict(buffers)
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B], first index of the maximum
        buffers["tokens"] = buffers["tokens"].at[:, j].set(token)
        top_logits, top_ids = jax.lax.top_k(logits, 5)
        buffers["top_logits"] = buffers["top_logits"].at[j].set(top_logits)
        buffers["top_ids"] = buffers["top_ids"].at[j].set(top_ids.astype(jnp.int32))
        if keep_logits:
            buffers["logits"] = buffers["logits"].at[j].set(logits)
        all_eos = jnp.all(token == EOS_TOKEN)

        x = gemma.embed_tokens(table, token[:, None], dtype)  # [B, 1, W]
        positions = pre["prefill_len"][:, None] + j + config.decode_position_offset  # [B, 1]
        mask = (slots[None, None, :] >= pre["prefix_start"][:, None, None]) & (slots[None, None, :] < p_len + j + 1)
        logits, cache, probs = _decoder(llm, x, positions, mask, cache, p_len + j, 1)  # probs [L, B, K, G, 1, S]
        if capture is not None:
            buffers["attention"] = buffers["attention"].at[j].set(_reduce(probs, capture, num_keys))
        return logits.astype(jnp.float32), cache, all_eos, j + 1, buffers

    carry = (pre["logits"], pre["cache"], jnp.bool_(False), jnp.int32(0), buffers)
    _, _, _, num_steps, buffers = jax.lax.while_loop(cond, step, carry)

    key_source = jnp.concatenate(
        [pre["source"], jnp.broadcast_to(p_len + jnp.arange(j_len, dtype=jnp.int32), (b, j_len))], axis=1)
    prefill_attention = None
    if prefill_rows:
        prefill_attention = pre["probs"] if capture is None else _reduce(pre["probs"], capture, num_keys)
    return dict(
        tokens=buffers["tokens"],
        num_steps=num_steps,
        key_len=p_len + 1 + jnp.arange(j_len, dtype=jnp.int32),
        prefix_start=pre["prefix_start"],
        key_source=key_source,
        attention=buffers.get("attention"),
        prefill_attention=prefill_attention,
        logits=buffers.get("logits"),
        top_logits=buffers["top_logits"],
        top_ids=buffers["top_ids"],
    )


# ------------------------------------------------------------------------------------------------------
# The decoding bundle (pi0viz.capture/2)


def decode_bundle_from_output(out: FastSampleOutput, config: Pi0FastConfig, *, images: np.ndarray,
                              token_ids: np.ndarray, token_mask: np.ndarray, token_pieces: np.ndarray,
                              image_masks: np.ndarray | None = None, piece: Any = None, prompt: Any = None,
                              inference_step: int | None = None, patch_grid: tuple[int, int] = (16, 16)
                              ) -> DecodeBundle:
    """A `sample_tokens(..., capture=...)` result as a DecodeBundle: the `num_steps` decode steps run, the kv-cache
    slots cut to the prefix plus the tokens generated (S = P + num_steps, or P with prefix_keys_only).

    Args:
        out: the captured call (attention required). config: its configuration (camera names = image_keys).
        images: uint8[B, C, h, w, 3] what the model saw. token_ids, token_mask, token_pieces: [B, T] the prompt.
        image_masks: bool[B, C] (default all True: openpi's FAST policies never mask cameras).
        piece: optional callable id -> display piece (a PromptTokenizer's `piece`) for the generated ids.
        prompt: optional [B] raw prompts. inference_step: the call's index in an episode.
    """
    if out.attention is None:
        raise ValueError("sample_tokens ran without capture: pass capture=CaptureOptions(...) to get a bundle")
    n = int(out.num_steps)
    p_len = config.prefix_len
    keys = "prefix" if out.attention.shape[-1] == p_len else "all"
    # Cut to the steps run and the slots filled while still on the device: the buffer holds every possible step
    # (up to 256 at full size), a short call copies only what it used.
    att = np.asarray(out.attention[:n, ..., :p_len + (0 if keys == "prefix" else n)])  # [J, L, B, K, G, 1, S]
    if att.dtype.kind != "f" or att.dtype.itemsize > 4:
        att = att.astype(np.float32)
    generated = np.asarray(out.tokens)[:, :n].astype(np.int32)
    b, c = generated.shape[0], len(config.image_keys)
    pieces = None
    if piece is not None:
        pieces = np.asarray([[str(piece(int(i))) for i in row] for row in generated.tolist()], dtype=str).reshape(b, n)
    return DecodeBundle(
        attention=att,
        camera_names=list(config.image_keys),
        images=np.asarray(images, np.uint8),
        image_masks=np.ones((b, c), bool) if image_masks is None else np.asarray(image_masks, bool),
        token_ids=np.asarray(token_ids, np.int32),
        token_pieces=np.asarray(token_pieces, dtype=str),
        token_mask=np.asarray(token_mask, bool),
        generated_ids=generated,
        key_len=np.asarray(out.key_len, np.int32)[:n],
        prefix_start=np.asarray(out.prefix_start, np.int32),
        key_source=np.asarray(out.key_source, np.int32)[:, :p_len],
        patch_grid=patch_grid,
        attention_heads="max" if att.shape[3:5] == (1, 1) and config.llm.num_heads > 1 else "all",
        attention_keys=keys,
        generated_pieces=pieces,
        prompt=None if prompt is None else np.asarray(prompt, dtype=str).reshape(b),
        inference_step=inference_step,
    )
