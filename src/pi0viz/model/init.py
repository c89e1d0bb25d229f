"""The pi0 / pi0.5 parameter tree (openpi paths and shapes) and a random initialization with openpi-like scales.

`param_specs(config)` is the single definition of the tree: '/'-joined path -> (shape, init, fan_in).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pi0viz.model.config import Pi0Config

Params = dict[str, Any]
# init kinds: "normal" N(0, 1/fan_in) (lecun normal), "embed" N(0, 1), "zeros", "ones", "posemb" N(0, 1/width)
Spec = tuple[tuple[int, ...], str, int]


def param_specs(config: Pi0Config) -> dict[str, Spec]:
    """Every parameter of pi0 (or pi0.5) as '/'-joined openpi path -> (shape, init kind, fan_in)."""
    llm, ex, sg = config.llm, config.expert, config.siglip
    specs: dict[str, Spec] = {}

    def add(path: str, shape: tuple[int, ...], init: str = "normal", fan_in: int = 1) -> None:
        specs[path] = (tuple(int(s) for s in shape), init, fan_in)

    # SigLIP vision tower (big_vision names), encoder blocks stacked over depth.
    w, d, ph, pw = sg.width, sg.depth, *sg.patch_size
    nh, hd = sg.num_heads, sg.width // sg.num_heads
    img = "PaliGemma/img"
    add(f"{img}/embedding/kernel", (ph, pw, 3, w), fan_in=ph * pw * 3)
    add(f"{img}/embedding/bias", (w,), "zeros")
    add(f"{img}/pos_embedding", (1, config.num_image_tokens, w), "posemb", w)
    blk = f"{img}/Transformer/encoderblock"
    for ln in ("LayerNorm_0", "LayerNorm_1"):
        add(f"{blk}/{ln}/scale", (d, w), "ones")
        add(f"{blk}/{ln}/bias", (d, w), "zeros")
    mha = f"{blk}/MultiHeadDotProductAttention_0"
    for name in ("query", "key", "value"):
        add(f"{mha}/{name}/kernel", (d, w, nh, hd), fan_in=w)
        add(f"{mha}/{name}/bias", (d, nh, hd), "zeros")
    add(f"{mha}/out/kernel", (d, nh, hd, w), fan_in=w)
    add(f"{mha}/out/bias", (d, w), "zeros")
    add(f"{blk}/MlpBlock_0/Dense_0/kernel", (d, w, sg.mlp_dim), fan_in=w)
    add(f"{blk}/MlpBlock_0/Dense_0/bias", (d, sg.mlp_dim), "zeros")
    add(f"{blk}/MlpBlock_0/Dense_1/kernel", (d, sg.mlp_dim, w), fan_in=sg.mlp_dim)
    add(f"{blk}/MlpBlock_0/Dense_1/bias", (d, w), "zeros")
    add(f"{img}/Transformer/encoder_norm/scale", (w,), "ones")
    add(f"{img}/Transformer/encoder_norm/bias", (w,), "zeros")
    # openpi zero-inits this head, which makes every image token 0; random init keeps the image path alive.
    add(f"{img}/head/kernel", (w, llm.width), fan_in=w)
    add(f"{img}/head/bias", (llm.width,), "zeros")

    # Two-expert Gemma: expert 0 plain names, expert 1 suffix "_1"; layers stacked over depth.
    g = "PaliGemma/llm"
    add(f"{g}/embedder/input_embedding", (config.vocab_size, llm.width), "embed")
    L = llm.depth
    for i, c in enumerate((llm, ex)):
        s = "" if i == 0 else f"_{i}"
        add(f"{g}/layers/attn/q_einsum{s}/w", (L, c.num_heads, c.width, c.head_dim), fan_in=c.width)
        add(f"{g}/layers/attn/kv_einsum{s}/w", (L, 2, c.num_kv_heads, c.width, c.head_dim), fan_in=c.width)
        add(f"{g}/layers/attn/attn_vec_einsum{s}/w", (L, c.num_heads, c.head_dim, c.width),
            fan_in=c.num_heads * c.head_dim)
        add(f"{g}/layers/mlp{s}/gating_einsum", (L, 2, c.width, c.mlp_dim), fan_in=c.width)
        add(f"{g}/layers/mlp{s}/linear", (L, c.mlp_dim, c.width), fan_in=c.mlp_dim)
        for norm, stack in (("layers/pre_attention_norm", (L,)), ("layers/pre_ffw_norm", (L,)), ("final_norm", ())):
            if config.pi05 and i == 1:
                # adaRMS: Dense(D -> 3D) of the time conditioning. openpi zero-inits it (identity norm, residual
                # gate 0, so the expert's layers would do nothing); random init keeps them alive.
                add(f"{g}/{norm}{s}/Dense_0/kernel", (*stack, c.width, 3 * c.width), fan_in=c.width)
                add(f"{g}/{norm}{s}/Dense_0/bias", (*stack, 3 * c.width), "zeros")
            else:
                add(f"{g}/{norm}{s}/scale", (*stack, c.width), "zeros")  # used as (1 + scale)

    # Projections (nnx.Linear: kernel [in, out], bias [out]).
    a, e = config.action_dim, ex.width
    if config.pi05:  # no state token; the time goes through its own MLP into adaRMS
        projections = {"action_in_proj": (a, e), "time_mlp_in": (e, e), "time_mlp_out": (e, e)}
    else:
        projections = {"state_proj": (a, e), "action_in_proj": (a, e), "action_time_mlp_in": (2 * e, e),
                       "action_time_mlp_out": (e, e)}
    projections["action_out_proj"] = (e, a)
    for name, (n_in, n_out) in projections.items():
        add(f"{name}/kernel", (n_in, n_out), fan_in=n_in)
        add(f"{name}/bias", (n_out,), "zeros")
    return specs


def unflatten(flat: dict[str, Any]) -> Params:
    """'/'-joined paths -> nested dicts."""
    tree: Params = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def flatten(tree: Params, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> '/'-joined paths (sorted as the tree is traversed)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}/"))
        else:
            flat[path] = value
    return flat


SMALL_CHUNK = 1 << 16  # values per sampler call for small leaves (biases, norms, tiny configs)
LARGE_CHUNK = 1 << 22  # ... and for large ones: bounds the sampler's 32-bit temporaries (16 MiB)


def abstract_params(config: Pi0Config) -> Params:
    """The parameter tree as jax.ShapeDtypeStruct leaves in `config.compute_dtype` (nothing is allocated)."""
    dtype = config.compute_dtype
    return unflatten({path: jax.ShapeDtypeStruct(shape, dtype) for path, (shape, _, _) in param_specs(config).items()})


@functools.partial(jax.jit, static_argnums=(2, 3))
def _normal_chunk(key: jax.Array, std: jax.Array, size: int, dtype: jnp.dtype) -> jax.Array:
    """[size] samples of N(0, std^2), drawn directly in `dtype`."""
    return jax.random.normal(key, (size,), dtype) * std.astype(dtype)


def _init_leaf(key: jax.Array, spec: Spec, dtype: jnp.dtype) -> jax.Array:
    shape, kind, fan_in = spec
    host_dtype = np.dtype(dtype)  # bfloat16 -> ml_dtypes' numpy bfloat16
    if kind in ("zeros", "ones"):
        return jax.device_put((np.zeros if kind == "zeros" else np.ones)(shape, host_dtype))
    std = jnp.float32({"normal": 1.0 / math.sqrt(fan_in), "embed": 1.0, "posemb": 1.0 / math.sqrt(fan_in)}[kind])
    # Every leaf is filled from fixed-size chunks, so the sampler compiles twice per dtype instead of once per
    # leaf shape (50 compilations, ~14 s on 2 cores for the tiny config), and a large leaf (the 1.2 B-value
    # gated MLP) never has float32 temporaries of its own size.
    size = math.prod(shape)
    chunk = SMALL_CHUNK if size <= SMALL_CHUNK else LARGE_CHUNK
    out = np.empty(size, host_dtype)
    for i, start in enumerate(range(0, size, chunk)):
        part = np.asarray(_normal_chunk(jax.random.fold_in(key, i), std, chunk, dtype))
        out[start:start + chunk] = part[: size - start]
    return jax.device_put(out.reshape(shape))


def init_params(config: Pi0Config, rng: jax.Array) -> Params:
    """Random parameters in `config.dtype` with openpi's tree layout.

    Scales: lecun-normal kernels, N(0, 1) token embeddings, zero biases, zero RMSNorm scales (used as 1 + scale),
    unit LayerNorm scales, and a random (not zero) SigLIP head so that images affect the actions.
    Leaves are sampled directly in `config.dtype`, chunk by chunk into one host buffer per leaf, so peak memory
    is the tree plus about one leaf (a full-size bfloat16 tree never exists in float32).
    Not traceable (it fills host buffers): use `abstract_params` for shapes.
    """
    specs = param_specs(config)
    dtype = config.compute_dtype
    keys = jax.random.split(rng, len(specs))
    flat = {}
    for i, (path, spec) in enumerate(sorted(specs.items())):
        flat[path] = _init_leaf(keys[i], spec, dtype)
    return unflatten(flat)


def posemb_sincos_2d(grid: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """float32[1, grid * grid, width] 2-D sine/cosine position code, row-major over the patch grid: a quarter of
    the channels each for sin(col), cos(col), sin(row), cos(row) at geometric frequencies 1 / temperature^(i / q),
    q = width / 4. A start for SigLIP's learned position embedding (pi0viz's trained reach-tiny)."""
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / quarter)  # [q]
    row, col = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    c = col.reshape(-1, 1) * omega  # [grid^2, q]
    r = row.reshape(-1, 1) * omega
    return np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], axis=-1)[None].astype(np.float32)
