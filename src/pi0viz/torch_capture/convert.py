"""openpi JAX parameters -> PyTorch pi0 / pi0.5 state dict (LeRobot's PI0Policy / PI05Policy, openpi's PyTorch port).

numpy only: the input is openpi's parameter tree flattened to '/'-joined paths (`params_flat.npz`, or
`pi0viz.model.checkpoint.load_params` flattened), the output maps state-dict keys to numpy arrays; the caller turns
them into tensors (`load_openpi_params` in pi0viz.torch_capture.lerobot does).

Both PyTorch ports build the same module tree under `paligemma_with_expert` (HF transformers' PaliGemma + a Gemma
expert); LeRobot nests it one level deeper, under `model.` (`prefix`). Layout of the JAX leaves (openpi
gemma.py / siglip.py): L layers, N query heads, K kv heads, E head dim, W width, F mlp width (docs/architecture.md).
    q_einsum/w [L, N, W, E]      -> q_proj.weight [N*E, W]     (torch Linear weights are [out, in])
    kv_einsum/w [L, 2, K, W, E]  -> k_proj / v_proj [K*E, W]   (index 0 = keys, 1 = values)
    attn_vec_einsum/w [L, N, E, W] -> o_proj.weight [W, N*E]
    mlp/gating_einsum [L, 2, W, F] -> gate_proj / up_proj [F, W];  mlp/linear [L, F, W] -> down_proj [W, F]
Rotary embeddings need no permutation: openpi and HF Gemma both rotate the two halves of each head.
No suffix on a JAX name = PaliGemma (prefix tokens), suffix "_1" = the action expert.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pi0viz.errors import CheckpointError

PALIGEMMA = "paligemma_with_expert.paligemma.model."
EXPERT = "paligemma_with_expert.gemma_expert.model."
SIGLIP = PALIGEMMA + "vision_tower.vision_model."


def openpi_to_torch_state_dict(params: Mapping[str, np.ndarray], *, prefix: str = "model.") -> dict[str, np.ndarray]:
    """Map openpi's flat JAX parameters to the PyTorch pi0 / pi0.5 state dict.

    Args:
        params: '/'-joined path -> array, e.g. "PaliGemma/llm/layers/attn/q_einsum/w" -> float32[L, N, W, E].
            A trailing "/value" on every path (training-time nnx.State) is accepted.
        prefix: prepended to every key: "model." for LeRobot's PI0Policy / PI05Policy, "" for openpi's PI0Pytorch.

    Returns:
        state-dict key -> numpy array in torch layout (dtype kept). pi0 vs pi0.5 follows from the tree: a tree
        with `time_mlp_in` (adaRMS time conditioning) is pi0.5, one with `state_proj` is pi0. The action expert's
        unused `lm_head` is not produced (load with strict=False and check the missing keys).
    """
    p = _Params(_strip_value(dict(params)))
    out: dict[str, np.ndarray] = {}
    _siglip(p, out)
    _gemma(p, out, suffix="", dest=PALIGEMMA + "language_model.")
    _gemma(p, out, suffix="_1", dest=EXPERT)
    table = p.take("PaliGemma/llm/embedder/input_embedding")  # [V, D]
    out[PALIGEMMA + "language_model.embed_tokens.weight"] = table
    out["paligemma_with_expert.paligemma.lm_head.weight"] = table  # tied to the embedding, as in PaliGemma
    pi05 = "time_mlp_in/kernel" in p
    heads = ["action_in_proj", "action_out_proj"]
    heads += ["time_mlp_in", "time_mlp_out"] if pi05 else ["state_proj", "action_time_mlp_in", "action_time_mlp_out"]
    for name in heads:
        _linear(p, out, name, name)
    unused = sorted(set(p) - p.used)
    if unused:
        raise CheckpointError(f"{len(unused)} openpi parameters have no PyTorch counterpart, e.g. {unused[:3]}")
    return {prefix + k: v for k, v in out.items()}


class _Params(dict):
    """The flat tree plus the paths read so far: leftovers at the end mean a layout this converter does not know."""

    def __init__(self, flat: dict[str, np.ndarray]) -> None:
        super().__init__(flat)
        self.used: set[str] = set()

    def take(self, path: str) -> np.ndarray:
        if path not in self:
            raise CheckpointError(f"openpi parameter {path!r} is missing (expected an openpi pi0 / pi0.5 params tree)")
        self.used.add(path)
        return np.asarray(self[path])


def _strip_value(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if p and all(k.endswith("/value") for k in p):
        return {k[: -len("/value")]: v for k, v in p.items()}
    return p


def _linear(p, out, src: str, dest: str, *, index: int | None = None) -> None:
    """flax Dense / nnx.Linear kernel [in, out] (+ bias) -> torch Linear weight [out, in] (+ bias)."""
    kernel = p.take(f"{src}/kernel")
    kernel = kernel if index is None else kernel[index]
    out[f"{dest}.weight"] = np.ascontiguousarray(kernel.T)
    if f"{src}/bias" in p:
        bias = p.take(f"{src}/bias")
        out[f"{dest}.bias"] = bias if index is None else bias[index]


def _layer_norm(p, out, src: str, dest: str, *, index: int | None = None) -> None:
    for leaf, name in (("scale", "weight"), ("bias", "bias")):
        x = p.take(f"{src}/{leaf}")
        out[f"{dest}.{name}"] = x if index is None else x[index]


def _siglip(p, out) -> None:
    """SigLIP (big_vision ViT, scanned over depth) -> HF SiglipVisionModel + PaliGemma's projector."""
    img = "PaliGemma/img/"
    out[SIGLIP + "embeddings.patch_embedding.weight"] = np.ascontiguousarray(
        p.take(img + "embedding/kernel").transpose(3, 2, 0, 1))  # HWIO [14, 14, 3, W] -> OIHW [W, 3, 14, 14]
    out[SIGLIP + "embeddings.patch_embedding.bias"] = p.take(img + "embedding/bias")
    out[SIGLIP + "embeddings.position_embedding.weight"] = p.take(img + "pos_embedding")[0]  # [1, 256, W] -> [256, W]
    block = img + "Transformer/encoderblock/"
    depth = p.take(block + "LayerNorm_0/scale").shape[0]
    for i in range(depth):
        dest = f"{SIGLIP}encoder.layers.{i}."
        _layer_norm(p, out, block + "LayerNorm_0", dest + "layer_norm1", index=i)
        _layer_norm(p, out, block + "LayerNorm_1", dest + "layer_norm2", index=i)
        _linear(p, out, block + "MlpBlock_0/Dense_0", dest + "mlp.fc1", index=i)
        _linear(p, out, block + "MlpBlock_0/Dense_1", dest + "mlp.fc2", index=i)
        mha = block + "MultiHeadDotProductAttention_0/"
        for jax_name, torch_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            kernel = p.take(f"{mha}{jax_name}/kernel")[i]  # [W, heads, head_dim]
            out[f"{dest}self_attn.{torch_name}.weight"] = np.ascontiguousarray(kernel.reshape(kernel.shape[0], -1).T)
            out[f"{dest}self_attn.{torch_name}.bias"] = p.take(f"{mha}{jax_name}/bias")[i].reshape(-1)
        kernel = p.take(mha + "out/kernel")[i]  # [heads, head_dim, W]
        out[f"{dest}self_attn.out_proj.weight"] = np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T)
        out[f"{dest}self_attn.out_proj.bias"] = p.take(mha + "out/bias")[i]
    _layer_norm(p, out, img + "Transformer/encoder_norm", SIGLIP + "post_layernorm")
    _linear(p, out, img + "head", PALIGEMMA + "multi_modal_projector.linear")


def _gemma(p, out, *, suffix: str, dest: str) -> None:
    """One Gemma stack (PaliGemma's LM or the action expert), layers stacked on axis 0 in JAX."""
    llm = "PaliGemma/llm/"
    q = p.take(f"{llm}layers/attn/q_einsum{suffix}/w")  # [L, N, W, E]
    kv = p.take(f"{llm}layers/attn/kv_einsum{suffix}/w")  # [L, 2, K, W, E]
    o = p.take(f"{llm}layers/attn/attn_vec_einsum{suffix}/w")  # [L, N, E, W]
    gating = p.take(f"{llm}layers/mlp{suffix}/gating_einsum")  # [L, 2, D, F]
    down = p.take(f"{llm}layers/mlp{suffix}/linear")  # [L, F, D]
    num_layers, _, width, _ = q.shape
    for i in range(num_layers):
        layer = f"{dest}layers.{i}."
        out[layer + "self_attn.q_proj.weight"] = _heads_in(q[i])
        out[layer + "self_attn.k_proj.weight"] = _heads_in(kv[i, 0])
        out[layer + "self_attn.v_proj.weight"] = _heads_in(kv[i, 1])
        out[layer + "self_attn.o_proj.weight"] = np.ascontiguousarray(o[i].reshape(-1, width).T)  # [W, N*E]
        out[layer + "mlp.gate_proj.weight"] = np.ascontiguousarray(gating[i, 0].T)
        out[layer + "mlp.up_proj.weight"] = np.ascontiguousarray(gating[i, 1].T)
        out[layer + "mlp.down_proj.weight"] = np.ascontiguousarray(down[i].T)
        norms = (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm"))
        for jax_norm, torch_norm in norms:
            _norm(p, out, f"{llm}layers/{jax_norm}{suffix}", layer + torch_norm, index=i)
    _norm(p, out, f"{llm}final_norm{suffix}", dest + "norm")


def _heads_in(w: np.ndarray) -> np.ndarray:
    """[N, W, E] per-head projection -> torch Linear weight [N*E, W] (output feature n*E + e)."""
    return np.ascontiguousarray(w.transpose(0, 2, 1).reshape(-1, w.shape[1]))


def _norm(p, out, src: str, dest: str, *, index: int | None = None) -> None:
    """RMSNorm `scale` -> `weight`; pi0.5's adaRMS `Dense_0` (cond -> [scale | shift | gate]) -> `dense`."""
    if f"{src}/scale" in p:
        x = p.take(f"{src}/scale")
        out[f"{dest}.weight"] = x if index is None else x[index]
    else:
        _linear(p, out, f"{src}/Dense_0", f"{dest}.dense", index=index)
