"""Find the modules a capture hooks in a PyTorch pi0 / pi0.5, and refuse models it cannot observe.

Both PyTorch ports (LeRobot's PI0Policy / PI05Policy 0.4.x-0.6.x, openpi's PI0Pytorch) hold the same tree:

    <policy>.model                                   LeRobot only (PI0Pytorch / PI05Pytorch)
      .paligemma_with_expert
         .paligemma.model.vision_tower               SigLIP: called once per camera per inference call
         .paligemma.model.language_model.embed_tokens   the prompt ids, once per inference call
         .paligemma.model.language_model.layers[i].self_attn   PaliGemma: called once per layer on the prefix
                                                     (cameras + prompt), weights [B, N, P, P] in eager mode (both
                                                     LeRobot versions set eager before the prefix pass)
         .gemma_expert.model.layers[i].self_attn     the action expert: called once per layer per denoising step,
                                                     returns (output, weights [B, N, Q, S]) in eager mode
      .state_proj                                    pi0 only (one state token in the suffix)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pi0viz.errors import CaptureError, CompiledModelError


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """The hooked modules of one pi0 / pi0.5 and the facts the bundle needs.

    Attributes:
        vision_tower: SigLIP module; its forward input is one camera's pixels float[B, 3, h, w] in [-1, 1].
        embed_tokens: the prompt embedding; its forward input is int[B, T] token ids.
        expert_attention: L self-attention modules of the action expert, in layer order.
        num_kv_heads: K of the expert (query heads N = K * G).
        num_state_tokens: 1 for pi0 (state token first in the suffix), 0 for pi0.5.
        config: the policy's config (LeRobot: camera keys in `image_features`), or None.
        prefix_attention: PaliGemma's L self-attention modules in layer order (the prefix pass), or () when
            unknown.
    """

    vision_tower: torch.nn.Module
    embed_tokens: torch.nn.Module
    expert_attention: tuple[torch.nn.Module, ...]
    num_kv_heads: int
    num_state_tokens: int
    config: Any
    prefix_attention: tuple[torch.nn.Module, ...] = ()


def find_parts(model: Any) -> ModelParts:
    """Locate the hooked modules of a LeRobot PI0Policy / PI05Policy or a PI0Pytorch-like model.

    Raises:
        CompiledModelError: the model or its sampler is compiled.
        CaptureError: the object is not a pi0 / pi0.5 of the known layout.
    """
    check_not_compiled(model)
    core = model.model if hasattr(getattr(model, "model", None), "paligemma_with_expert") else model
    pwe = getattr(core, "paligemma_with_expert", None)
    if pwe is None:
        raise CaptureError(
            f"expected a LeRobot PI0Policy / PI05Policy or openpi's PI0Pytorch (a module with "
            f"`paligemma_with_expert`), got {type(model).__name__}")
    paligemma = pwe.paligemma
    inner = getattr(paligemma, "model", paligemma)  # transformers >= 4.52 nests vision and LM under .model
    vision = getattr(inner, "vision_tower", None)
    language = getattr(inner, "language_model", None)
    layers = getattr(getattr(pwe.gemma_expert, "model", None), "layers", None)
    if vision is None or language is None or layers is None:
        raise CaptureError(
            "this pi0 has an unknown module layout (expected paligemma.model.vision_tower, "
            "paligemma.model.language_model and gemma_expert.model.layers)")
    return ModelParts(
        vision_tower=vision,
        embed_tokens=language.embed_tokens,
        expert_attention=tuple(layer.self_attn for layer in layers),
        num_kv_heads=int(pwe.gemma_expert.config.num_key_value_heads),
        num_state_tokens=1 if getattr(core, "state_proj", None) is not None else 0,
        config=getattr(model, "config", None),
        prefix_attention=tuple(layer.self_attn for layer in getattr(language, "layers", ())),
    )


def check_not_compiled(model: Any) -> None:
    """Raise CompiledModelError, saying how to turn compilation off, if any part of `model` is compiled.

    Checks `torch.compile(module)` wrappers, `module.compile()`, and compiled methods stored on a module
    (LeRobot's `compile_model=True` and openpi's `pytorch_compile_mode` replace `sample_actions` that way).
    """
    found: list[str] = []
    if hasattr(model, "_orig_mod"):
        found.append("the model itself is a torch.compile wrapper (use `model._orig_mod`)")
    modules = model.named_modules() if isinstance(model, torch.nn.Module) else []
    for name, module in modules:
        where = name or type(model).__name__
        if getattr(module, "_compiled_call_impl", None) is not None:
            found.append(f"{where}.forward (Module.compile())")
        for attr, value in vars(module).items():
            if callable(value) and hasattr(value, "_torchdynamo_orig_callable"):
                found.append(f"{where}.{attr} (torch.compile)")
    if getattr(getattr(model, "config", None), "compile_model", False) and not found:
        found.append("config.compile_model is True")
    if found:
        raise CompiledModelError(
            f"cannot capture attention from a compiled model ({'; '.join(found[:3])}): the attention weights live "
            "inside the compiled graph, where no hook runs. Turn compilation off: LeRobot `compile_model=False` "
            "(config or --policy.compile_model=false), openpi `pytorch_compile_mode=None`")
