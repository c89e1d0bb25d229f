"""`visualize_attention`: the one call a LIBERO loop makes per inference call to get the attention_viz tree."""

from __future__ import annotations

import os
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from pi0viz.core.bundle import BundleError, CaptureBundle
from pi0viz.core.images import resize_with_pad
from pi0viz.render.engine import MODEL_PATCH_PX, RenderOptions, RenderSummary, render_bundle


def visualize_attention(
    attention: Any,
    *,
    images: Any,
    camera_names: Sequence[str],
    token_pieces: Any,
    inference_step: int,
    image_masks: Any = None,
    token_mask: Any = None,
    out_dir: str | os.PathLike = "attention_viz",
    options: RenderOptions | None = None,
    num_state_tokens: int = 1,
    num_action_tokens: int | None = None,
    attention_kind: Literal["probs", "logits"] = "probs",
    attention_heads: Literal["all", "max"] = "all",
    patch_grid: tuple[int, int] = (16, 16),
    diffusion_times: Sequence[float] | None = None,
    step_indices: Sequence[int] | None = None,
    layer_indices: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RenderSummary:
    """Render where the action tokens attend in one inference call, as JPEGs under `out_dir`.

    Writes {out_dir}/inference_timestep_{inference_step}/diffusion_timestep_D/action_token_A/layer_L/
    fused_attention_on_{camera}.jpg (one per unmasked camera) and fused_attention_on_text.jpg. D = 0 is the
    first denoising step (t = 1.0, pure noise), D = 9 the last of pi0's 10 (t = 0.1).

    Axes (docs/architecture.md): D denoising steps, L layers, B batch, K kv heads, G query heads per kv head,
    Q query tokens (state + action tokens), S keys (C cameras x rows x cols patches + T prompt slots + suffix).

    Args:
        attention: float16/float32[D, L, B, K, G, Q, S] (bfloat16 and JAX/torch arrays are converted):
            post-softmax probabilities, or pre-softmax scores with attention_kind="logits".
            pi0: [10, 18, 1, 1, 8, 51, 867]; pi0.5 (LIBERO): [10, 18, 1, 1, 8, 10, 978].
        images: the model-input images, uint8 (float in [0, 1] or [-1, 1] is converted): [B, C, h, w, 3],
            [C, h, w, 3] (B = 1), or {camera name: [h, w, 3] or [B, h, w, 3]}. Images that are not
            rows*14 x cols*14 pixels (224 x 224 for pi0) are resized with padding as the model does.
        camera_names: [C] camera slots in token order (e.g. base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb).
        token_pieces: str[B, T] or str[T] decoded prompt pieces, pads included ("" for pads).
        inference_step: N in inference_timestep_N (index of this call in the episode).
        image_masks: bool[B, C] or bool[C] (or {camera: bool}); False = padded camera slot, nothing is drawn.
            Default: all True, except cameras whose keys get exactly zero attention (a padded slot under
            openpi's masks), which the renderer skips and names in its summary.
        token_mask: bool[B, T] or bool[T], False = pad. Default: pieces that are not "".
        out_dir: the attention_viz folder.
        options: what to draw and how (selections, color scale, colormap, zoom, quality, workers, resume,
            batch_index): pi0viz.render.RenderOptions; default RenderOptions().
        num_state_tokens: 1 for pi0, 0 for pi0.5.
        num_action_tokens: H; default Q - num_state_tokens.
        attention_heads: "max" when the heads were already max-fused on the device (K = G = 1), e.g. a capture
            with CaptureOptions(fuse_heads=True); rows then need not sum to 1.
        patch_grid: image tokens per camera, (rows, cols), raster order.
        diffusion_times, step_indices, layer_indices: what the D and L axes hold (default: all steps
            0..D-1 with t = 1, 1 - 1/D, ...; all layers 0..L-1). The indices name the output folders.
        progress: called with the number of finished files as work completes.

    Returns:
        a RenderSummary (files, bytes, seconds, out_dir = the inference_timestep_N folder).
    """
    att = _as_float_array(attention)
    if att.ndim != 7:
        raise BundleError(f"attention must be [D, L, B, K, G, Q, S] (7-d), got shape {list(att.shape)}")
    B, Q = att.shape[2], att.shape[5]
    names = [str(n) for n in camera_names]
    pieces = np.asarray(token_pieces, dtype=str)
    pieces = pieces[None] if pieces.ndim == 1 else pieces
    if pieces.ndim != 2 or pieces.shape[0] != B:
        raise BundleError(f"token_pieces must be [B={B}, T] or [T], got shape {list(pieces.shape)}")
    mask = (pieces != "") if token_mask is None else np.asarray(token_mask, bool)
    mask = mask[None] if mask.ndim == 1 else mask
    if num_action_tokens is None:
        num_action_tokens = Q - num_state_tokens
    D, L = att.shape[:2]
    if image_masks is None and isinstance(images, Mapping):  # cameras the caller left out are padded slots
        image_masks = {n: n in images for n in names}
    prefix_keys = len(names) * patch_grid[0] * patch_grid[1] + pieces.shape[1]
    bundle = CaptureBundle(
        attention=att,
        camera_names=names,
        images=_images(images, names, B, patch_grid),
        image_masks=_image_masks(image_masks, names, B),
        token_ids=np.zeros(pieces.shape, np.int32),
        token_pieces=pieces,
        token_mask=mask,
        num_state_tokens=num_state_tokens,
        num_action_tokens=num_action_tokens,
        diffusion_times=(np.asarray(diffusion_times, np.float32) if diffusion_times is not None
                         else (1.0 - np.arange(D) / max(D, 1)).astype(np.float32)),
        patch_grid=patch_grid,
        attention_kind=attention_kind,
        attention_heads=attention_heads,
        attention_keys="prefix" if att.shape[6] == prefix_keys else "all",  # S = cameras + prompt only
        step_indices=None if step_indices is None else np.asarray(step_indices, np.int32),
        layer_indices=None if layer_indices is None else np.asarray(layer_indices, np.int32),
        inference_step=inference_step,
    )
    return render_bundle(bundle, out_dir, options, inference_step=inference_step, progress=progress)


def _as_float_array(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype not in (np.float16, np.float32):
        a = a.astype(np.float32)  # bfloat16 (ml_dtypes), float64, ints
    return a


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    f = img.astype(np.float32)
    if f.min() < 0:  # the model's [-1, 1] convention
        f = (f + 1.0) / 2.0
    return np.clip(np.round(f * 255.0), 0, 255).astype(np.uint8)


def _images(images: Any, names: list[str], B: int, grid: tuple[int, int]) -> np.ndarray:
    """[B, C, h, w, 3] uint8; mixed sizes are first brought to the model input size."""
    want = (grid[0] * MODEL_PATCH_PX, grid[1] * MODEL_PATCH_PX)
    if isinstance(images, Mapping):
        unknown = sorted(set(images) - set(names))
        if unknown:
            raise BundleError(f"images has unknown camera(s) {unknown}; cameras are {names}")
        per_cam = []
        for n in names:
            if n not in images:  # a camera the caller does not have: a padded slot, drawn as nothing
                per_cam.append(np.zeros((B, *want, 3), np.uint8))
                continue
            a = _to_uint8(np.asarray(images[n]))
            a = a[None] if a.ndim == 3 else a
            if a.ndim != 4 or a.shape[0] != B or a.shape[-1] != 3:
                raise BundleError(f"images[{n!r}] must be [H, W, 3] or [B={B}, H, W, 3] RGB, got {list(a.shape)}")
            if a.shape[1:3] != want:
                a = np.stack([resize_with_pad(im, *want) for im in a])
            per_cam.append(a)
        return np.stack(per_cam, axis=1)
    a = _to_uint8(np.asarray(images))
    a = a[None] if a.ndim == 4 else a
    if a.ndim != 5 or a.shape[:2] != (B, len(names)) or a.shape[-1] != 3:
        raise BundleError(f"images must be [B={B}, C={len(names)}, H, W, 3] or [C, H, W, 3] RGB, got {list(a.shape)}")
    return a


def _image_masks(masks: Any, names: list[str], B: int) -> np.ndarray:
    if masks is None:
        return np.ones((B, len(names)), bool)
    if isinstance(masks, Mapping):
        m = np.stack([np.broadcast_to(np.asarray(masks.get(n, True), bool), (B,)) for n in names], axis=1)
    else:
        m = np.asarray(masks, bool)
        m = np.broadcast_to(m[None], (B, len(names))) if m.ndim == 1 else m
    if m.shape != (B, len(names)):
        raise BundleError(f"image_masks must be [B={B}, C={len(names)}] or [C], got {list(m.shape)}")
    return np.ascontiguousarray(m)
