"""Turn one captured PyTorch inference call into a CaptureBundle (the format every pi0viz tool reads)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.capture_options import CaptureOptions
from pi0viz.errors import CaptureError
from pi0viz.torch_capture.model_parts import ModelParts


LEROBOT_IMAGE_PREFIX = "observation.images."
OPENPI_IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's models/model.py IMAGE_KEYS


@dataclasses.dataclass
class CapturedCall:
    """What one inference call fed the model and its reduced expert attention (tensors stay on the device).

    Attributes:
        pixels: C tensors float[B, 3, h, w] in [-1, 1], camera slots in token order.
        token_ids: int[B, T] prompt ids, or None if the prompt embedding was not seen.
        records: D * L tensors [B, K', G', Q', S'] in hook-call order (step-major).
        key_valid: bool[B, P] prefix keys (cameras then prompt) that the action tokens may attend to.
        num_queries, num_keys: Q and S before any reduction.
        prefix_records: L tensors float[B, P, P], PaliGemma's prefix-pass attention max over heads, layer order
            (only with CaptureOptions(prefix=True)).
        prefix_valid: bool[B, P] prefix tokens that are not padding (the prefix mask's diagonal), or None.
    """

    pixels: list[torch.Tensor] = dataclasses.field(default_factory=list)
    token_ids: torch.Tensor | None = None
    records: list[torch.Tensor] = dataclasses.field(default_factory=list)
    key_valid: torch.Tensor | None = None
    num_queries: int = 0
    num_keys: int = 0
    prefix_records: list[torch.Tensor] = dataclasses.field(default_factory=list)
    prefix_valid: torch.Tensor | None = None


def build_bundle(
    call: CapturedCall,
    attention: np.ndarray,
    parts: ModelParts,
    options: CaptureOptions,
    *,
    camera_names: Sequence[str] | None = None,
    tokenizer: Any = None,
    prompt: str | Sequence[str] | None = None,
    actions: np.ndarray | torch.Tensor | None = None,
    inference_step: int | None = None,
) -> CaptureBundle:
    """Package a call's attention with the images, masks and prompt the model saw.

    Args:
        call: what the hooks recorded of the call.
        attention: its reduced expert attention `[D, L, B, K, G, Q, S]` (`AttentionCapture.stacked(call)`).
        parts: the hooked model's parts (state-token count, config for camera names).
        options: the reductions `attention` went through (recorded in the bundle).
        camera_names: C names in the model's camera order. Default: LeRobot's `config.image_features` keys
            without "observation.images." when their count matches (LeRobot feeds the cameras present in the
            batch in that order and appends absent ones, masked, at the end); for openpi's PI0Pytorch (its config
            has `pytorch_compile_mode`) with 3 cameras, openpi's IMAGE_KEYS; else camera_0, camera_1, ...
        tokenizer: turns ids into display pieces: an HF tokenizer (`convert_ids_to_tokens`), a sentencepiece
            processor (`id_to_piece`), pi0viz's tokenizer (`pieces`), or a callable ids -> pieces.
            None: pieces are the ids as "<id>".
        prompt: the raw prompt(s), stored for display.
        actions: float[B, A, action_dims] actions the call returned (optional).
        inference_step: index of the call in an episode (optional).
    """
    num_cameras = len(call.pixels)
    if num_cameras == 0 or call.token_ids is None:
        raise CaptureError(
            "the call's images or prompt tokens were not seen (did sample_actions run inside the block?)")
    pixels = torch.stack(call.pixels, dim=1)  # [B, C, 3, h, w] in [-1, 1]
    images = ((pixels.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2)
    token_ids = call.token_ids.cpu().numpy().astype(np.int32)  # [B, T]
    batch, num_text = token_ids.shape
    prefix = call.num_keys - call.num_queries
    per_camera = (prefix - num_text) // num_cameras
    side = math.isqrt(per_camera)
    if side * side != per_camera or per_camera * num_cameras + num_text != prefix:
        raise CaptureError(
            f"prefix of {prefix} keys does not split into {num_cameras} square camera grids + {num_text} prompt tokens")
    valid = call.key_valid.cpu().numpy()  # [B, P]
    token_mask = valid[:, num_cameras * per_camera:]
    num_state = parts.num_state_tokens
    steps = attention.shape[0]
    return CaptureBundle(
        attention=attention,
        camera_names=_camera_names(camera_names, parts.config, num_cameras),
        images=images.cpu().numpy(),
        image_masks=valid[:, : num_cameras * per_camera : per_camera].copy(),
        token_ids=token_ids,
        token_pieces=_pieces(token_ids, token_mask, tokenizer),
        token_mask=token_mask.copy(),
        num_state_tokens=num_state,
        num_action_tokens=call.num_queries - num_state,
        # LeRobot and openpi's port step t = 1 + d * (-1 / D) (openpi JAX accumulates t += dt in float32).
        diffusion_times=np.asarray([1.0 + d * (-1.0 / steps) for d in range(steps)], dtype=np.float32),
        patch_grid=(side, side),
        attention_heads="max" if options.fuse_heads else "all",
        attention_queries="actions" if options.action_rows_only else "suffix",
        attention_keys="prefix" if options.prefix_keys_only else "all",
        prompt=None if prompt is None else np.asarray([prompt] * batch if isinstance(prompt, str) else prompt,
                                                      dtype=str),
        inference_step=inference_step,
        actions=None if actions is None else _numpy(actions).astype(np.float32),
    )


def _camera_names(names: Sequence[str] | None, config: Any, count: int) -> list[str]:
    if names is not None:
        if len(names) != count:
            raise CaptureError(f"camera_names has {len(names)} names but the model saw {count} cameras")
        return [str(n) for n in names]
    keys = list(getattr(config, "image_features", None) or [])
    if len(keys) == count:
        return [k.removeprefix(LEROBOT_IMAGE_PREFIX) for k in keys]
    if hasattr(config, "pytorch_compile_mode") and count == len(OPENPI_IMAGE_KEYS):
        return list(OPENPI_IMAGE_KEYS)
    return [f"camera_{i}" for i in range(count)]


def _pieces(ids: np.ndarray, mask: np.ndarray, tokenizer: Any) -> np.ndarray:
    """str[B, T] display pieces; pads are ""."""
    decode: Callable[[list[int]], list[str]]
    if tokenizer is None:
        decode = lambda row: [f"<{i}>" for i in row]
    elif hasattr(tokenizer, "pieces"):  # pi0viz's own tokenizer already blanks pads
        return np.asarray(tokenizer.pieces(ids, mask), dtype=str)
    elif hasattr(tokenizer, "convert_ids_to_tokens"):
        decode = tokenizer.convert_ids_to_tokens
    elif hasattr(tokenizer, "id_to_piece"):
        decode = lambda row: [tokenizer.id_to_piece(int(i)) for i in row]
    elif callable(tokenizer):
        decode = tokenizer
    else:
        raise CaptureError(f"tokenizer must decode ids to pieces, got {type(tokenizer).__name__}")
    rows = [[str(p) if keep else "" for p, keep in zip(decode([int(i) for i in r]), m)] for r, m in zip(ids, mask)]
    return np.asarray(rows, dtype=str).reshape(ids.shape)


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pipeline_tokenizer(preprocessor: Any) -> Any:
    """The HF tokenizer inside a LeRobot preprocessor pipeline (its TokenizerProcessorStep), or None.

    Pass it as `tokenizer=` so the bundle shows the prompt's pieces instead of ids.
    """
    for step in getattr(preprocessor, "steps", []):
        for attr in ("input_tokenizer", "tokenizer"):
            tok = getattr(step, attr, None)
            if hasattr(tok, "convert_ids_to_tokens"):
                return tok
    return None
