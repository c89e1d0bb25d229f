"""The prefix's own attention from a PyTorch pi0 / pi0.5 (LeRobot 0.4.x / 0.6.x): PaliGemma's image and prompt tokens
reading each other, turned into a `pi0viz.prefix/1` PrefixAttention (core/prefix_bundle.py).

`capture_attention(model, CaptureOptions(prefix=True))` adds a forward hook on each PaliGemma self-attention layer
(`ModelParts.prefix_attention`); the prefix pass calls each once per inference call, before any expert layer, with
its weights [B, N, P, P] (eager: both LeRobot versions set it on the language model before the prefix pass). The
hook keeps the max over the N heads, in the options' dtype, on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pi0viz.core.prefix_bundle import PrefixAttention, prefix_blocks
from pi0viz.errors import CaptureError
from pi0viz.torch_capture.bundle import CapturedCall, _camera_names, _pieces
from pi0viz.torch_capture.model_parts import ModelParts


def fused_prefix(weights: torch.Tensor, dtype: str) -> torch.Tensor:
    """[B, N, P, P] post-softmax weights -> [B, P, P], max over the heads, float16 or float32."""
    return weights.detach().amax(dim=1).to(torch.float16 if dtype == "float16" else torch.float32)


def valid_tokens(mask: torch.Tensor | None, weights: torch.Tensor) -> torch.Tensor:
    """bool[B, P]: prefix tokens that are not padding. The prefix mask [B, 1, P, P] (additive or boolean) lets a
    token see itself exactly when it is valid (bidirectional prefix); without a mask, a key that no query of any
    head attends to is padding."""
    if mask is None:
        return (weights > 0).any(dim=1).any(dim=1)
    diagonal = mask[:, 0].diagonal(dim1=-2, dim2=-1)
    return diagonal if diagonal.dtype == torch.bool else diagonal > torch.finfo(diagonal.dtype).min / 2


def stacked_prefix(call: CapturedCall, num_layers: int) -> np.ndarray:
    """`call`'s prefix records as float16/float32[L, B, P, P] numpy (CaptureError when the pass was not seen whole)."""
    if len(call.prefix_records) != num_layers:
        raise CaptureError(f"the call's prefix pass recorded {len(call.prefix_records)} of {num_layers} PaliGemma "
                           "layers: capture with CaptureOptions(prefix=True) and run the whole sampling call")
    return torch.stack(call.prefix_records).cpu().numpy()


def build_prefix(call: CapturedCall, attention: np.ndarray, parts: ModelParts, *, batch_index: int = 0,
                 camera_names: Sequence[str] | None = None, tokenizer: Any = None, prompt: str = "",
                 inference_step: int | None = None) -> PrefixAttention:
    """One sample of a call's prefix attention as a PrefixAttention (float16 blocks, heads max).

    Args:
        call: the hooks' record (pixels: C tensors float[B, 3, h, w] in [-1, 1]; token_ids int[B, T]).
        attention: float[L, B, P, P] from `stacked_prefix`, P = C * N + T (cameras first, then the prompt).
        parts: the model's parts (its config names LeRobot's cameras).
        batch_index: which sample b of the batch.
        camera_names, tokenizer: as `build_bundle`'s.
        prompt: the raw prompt, for display.
        inference_step: the call's index in an episode (optional).
    """
    if not call.pixels or call.token_ids is None or call.prefix_valid is None:
        raise CaptureError("the call's images, prompt tokens or prefix pass were not seen "
                           "(did sample_actions run inside the block?)")
    cameras, (batch, text) = len(call.pixels), call.token_ids.shape
    if not 0 <= batch_index < batch:
        raise CaptureError(f"batch_index {batch_index} is outside the call's batch of {batch}")
    tokens = attention.shape[-1]
    per_camera = (tokens - text) // cameras
    side = math.isqrt(max(per_camera, 0))
    if side * side != per_camera or cameras * per_camera + text != tokens:
        raise CaptureError(f"a prefix of {tokens} tokens does not split into {cameras} square camera grids + {text} "
                           "prompt tokens")
    pixels = torch.stack([p[batch_index] for p in call.pixels])  # [C, 3, h, w] in [-1, 1]
    images = ((pixels.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    valid = call.prefix_valid[batch_index].cpu().numpy().astype(bool)  # [P]
    token_mask = valid[cameras * per_camera:]
    ids = call.token_ids[batch_index: batch_index + 1].cpu().numpy().astype(np.int64)
    return PrefixAttention(
        camera_names=_camera_names(camera_names, parts.config, cameras), images=images.cpu().numpy(),
        image_masks=valid[: cameras * per_camera: per_camera].copy(),
        token_pieces=_pieces(ids, token_mask[None], tokenizer)[0], token_mask=token_mask.copy(),
        patch_grid=(side, side), layer_indices=np.arange(attention.shape[0], dtype=np.int32),
        **prefix_blocks(attention[:, batch_index], cameras, per_camera), prompt=str(prompt),
        inference_step=inference_step)
