"""Knockouts on an unmodified PyTorch pi0 / pi0.5 (LeRobot 0.4.x / 0.6.x, openpi's port): chosen prefix keys removed
from chosen queries by editing the additive attention mask the attention modules receive.

    with knock_out_keys(policy, camera_keys, where="prefix", layers=[1]):
        actions = policy.model.sample_actions(...)

A forward pre-hook (with kwargs) on each chosen self-attention module replaces its `attention_mask` [B, 1, Q, S] by a
copy whose columns of the removed keys are masked the way the model masks padding (the dtype's lowest value; False in
a boolean mask). The inputs are unchanged and every token is still computed; only the chosen queries can no longer
read those keys, which is what pi0viz's JAX knockouts (`pi0viz.causal.knockout`) do. Where:

    all       every query: PaliGemma's prefix pass (image and prompt tokens reading each other) and the action expert
    prefix    only the prefix's own queries; the action expert still reads the keys (from the KV cache)
    expert    only the action expert's queries, every denoising step (the maps pi0viz draws)

Keys are indices into the prefix P = the camera slots' patches in the model's camera order, then the prompt slots
(the layout of `cap.prefix_attention()` and of the bundle's prefix keys). On transformers' own PI0 the prefix is the
model's own: only the cameras present have tokens (the processor's layout), so with every camera present it is the
same layout; its SDPA attention takes the edited boolean mask as is (no eager switch needed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from pi0viz.errors import CaptureError
from pi0viz.torch_capture import native
from pi0viz.torch_capture.model_parts import find_parts

WHERE = ("all", "prefix", "expert")


def _key_index(keys: Sequence[int] | np.ndarray) -> np.ndarray:
    """int64[K] prefix key indices from int indices or a bool[P] mask."""
    array = np.asarray(keys)
    if array.dtype == bool:
        return np.flatnonzero(array)
    if array.size and array.dtype.kind not in "iu":
        raise CaptureError(f"keys must be prefix key indices (int) or a bool[P] mask, got {array.dtype}")
    return array.reshape(-1).astype(np.int64)


def _layer_set(layers: Iterable[int] | None, depth: int) -> set[int]:
    chosen = set(range(depth)) if layers is None else {int(i) for i in layers}
    outside = sorted(i for i in chosen if not 0 <= i < depth)
    if outside:
        raise CaptureError(f"layers {outside} are outside the model's {depth} layers (0..{depth - 1})")
    return chosen


class _MaskEdit:
    """The pre-hook of one attention module: mask the removed keys' columns for every query of its pass."""

    def __init__(self, index: np.ndarray, size: int | None, *, prefix_pass: bool) -> None:
        self.index = index
        self.size = size  # the bool mask's P, checked against each pass's prefix length
        self.prefix_pass = prefix_pass
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # one edited copy per mask tensor

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        mask = kwargs.get("attention_mask")
        if mask is None or mask.dim() != 4:
            raise CaptureError("knock_out_keys needs the 4-D attention mask in the attention call (LeRobot / openpi "
                               f"pass one); this module got {None if mask is None else list(mask.shape)}")
        queries, keys = mask.shape[-2:]
        prefix = keys if self.prefix_pass else keys - queries  # the expert's keys: prefix (KV cache), then suffix
        if self.size is not None and self.size != prefix or (self.index.size and self.index.max() >= prefix):
            raise CaptureError(f"knock_out_keys: the keys name {self.size or int(self.index.max()) + 1} prefix "
                               f"tokens, this model's prefix holds {prefix}")
        cached = self._cache.get(id(mask))
        if cached is None or cached[0] is not mask:
            edited = mask.clone()
            columns = torch.as_tensor(self.index, device=mask.device)
            edited[..., columns] = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
            cached = (mask, edited)
            self._cache = {id(mask): cached}  # the pass's mask only: a new call brings a new tensor
        return args, {**kwargs, "attention_mask": cached[1]}


@contextlib.contextmanager
def knock_out_keys(model: Any, keys: Sequence[int] | np.ndarray, *, where: str = "all",
                   layers: Iterable[int] | None = None) -> Iterator[None]:
    """Remove prefix keys from the chosen queries of an unmodified LeRobot PI0Policy / PI05Policy, openpi's
    PI0Pytorch or transformers' PI0ForConditionalGeneration for the duration of a block; the hooks go on exit, also
    when the block raises.

    Args:
        model: the policy or its core model, uncompiled.
        keys: int[K] indices into the prefix's P tokens (cameras' patches, then prompt slots; transformers' PI0: the
            present cameras' only), or bool[P] with True = removed. Empty: nothing changes (bit for bit).
        where: "all", "prefix" (PaliGemma's queries only) or "expert" (the action expert's queries only).
        layers: the layer indices (0-based, the same index in PaliGemma and the expert) where the keys are removed;
            None = every layer.

    Raises:
        CaptureError: an unknown layout, `where` / `layers` out of range, or (inside the block) keys beyond the
            model's prefix.
        CompiledModelError: the model is compiled (no hook would run).
    """
    if where not in WHERE:
        raise CaptureError(f"knock_out_keys where={where!r}: expected one of {', '.join(WHERE)}")
    parts = native.find_native_parts(model) if native.is_native_pi0(model) else find_parts(model)
    index = _key_index(keys)
    size = len(np.asarray(keys)) if np.asarray(keys).dtype == bool else None
    modules: list[tuple[torch.nn.Module, bool]] = []
    if where in ("all", "prefix"):
        if not parts.prefix_attention:
            raise CaptureError("knock_out_keys where='prefix': this model's PaliGemma layers were not found")
        chosen = _layer_set(layers, len(parts.prefix_attention))
        modules += [(m, True) for i, m in enumerate(parts.prefix_attention) if i in chosen]
    if where in ("all", "expert"):
        chosen = _layer_set(layers, len(parts.expert_attention))
        modules += [(m, False) for i, m in enumerate(parts.expert_attention) if i in chosen]
    handles = []
    try:
        for module, prefix_pass in modules:  # also with no keys: the unchanged copy of the mask, bit for bit
            edit = _MaskEdit(index, size, prefix_pass=prefix_pass)
            handles.append(module.register_forward_pre_hook(edit, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
