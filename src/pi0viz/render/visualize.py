"""`visualize_attention`: the one call a LIBERO loop makes per inference call to get the attention_viz tree.

A thin convenience over `render_bundle`: it takes a complete CaptureBundle, or builds one from its fields (every
CaptureBundle field is accepted as a keyword, with conversions and defaults for arrays straight from a model), so
every capture that `render_bundle` renders (reduced ones included) renders through it too.
"""

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
    images: Any = None,
    camera_names: Sequence[str] | None = None,
    token_pieces: Any = None,
    inference_step: int | None = None,
    image_masks: Any = None,
    token_mask: Any = None,
    out_dir: str | os.PathLike = "attention_viz",
    options: RenderOptions | None = None,
    num_state_tokens: int | None = None,
    num_action_tokens: int | None = None,
    attention_kind: Literal["probs", "logits"] | None = None,
    attention_heads: Literal["all", "max"] | None = None,
    attention_queries: Literal["suffix", "actions"] | None = None,
    attention_keys: Literal["all", "prefix"] | None = None,
    patch_grid: tuple[int, int] | None = None,
    diffusion_times: Sequence[float] | None = None,
    step_indices: Sequence[int] | None = None,
    layer_indices: Sequence[int] | None = None,
    token_ids: Any = None,
    prompt: Any = None,
    actions: Any = None,
    progress: Callable[[int], None] | None = None,
) -> RenderSummary:
    """Render where the action tokens attend in one inference call, as JPEGs under `out_dir`.

    Writes {out_dir}/inference_timestep_{inference_step}/diffusion_timestep_D/action_token_A/layer_L/
    fused_attention_on_{camera}.jpg (one per drawn camera) and fused_attention_on_text.jpg. D = 0 is the
    first denoising step (t = 1.0, pure noise), D = 9 the last of pi0's 10 (t = 0.1).

    Either pass a complete `CaptureBundle` as `attention` (then no other bundle field may be given; only
    `inference_step`, `out_dir`, `options` and `progress`), or the attention array and the bundle's fields.

    Axes (docs/architecture.md): D denoising steps, L layers, B batch, K kv heads, G query heads per kv head,
    Q query tokens (state + action tokens), S keys (C cameras x rows x cols patches + T prompt slots + suffix).

    Args:
        attention: a CaptureBundle, or float16/float32[D, L, B, K, G, Q, S] (bfloat16 and JAX/torch arrays are
            converted): post-softmax probabilities, or pre-softmax scores with attention_kind="logits".
            pi0: [10, 18, 1, 1, 8, 51, 867]; pi0.5 (LIBERO): [10, 18, 1, 1, 8, 10, 978].
        images: the model-input images, uint8 (integers 0..255, float in [0, 1] or [-1, 1] are converted; NaN or
            other ranges are refused): [B, C, h, w, 3],
            [C, h, w, 3] (B = 1), or {camera name: [h, w, 3] or [B, h, w, 3]}. Images that are not
            rows*14 x cols*14 pixels (224 x 224 for pi0) are resized with padding as the model does.
        camera_names: [C] camera slots in token order (e.g. base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb).
        token_pieces: str[B, T] or str[T] decoded prompt pieces, pads included ("" for pads).
        inference_step: N in inference_timestep_N (index of this call in the episode); default the bundle's,
            else 0.
        image_masks: bool[B, C] or bool[C] (or {camera: bool}); False = padded camera slot, nothing is drawn.
            Default: all True; cameras whose keys get exactly zero attention (a padded slot under openpi's
            masks) are not drawn either (pi0viz.core.maps' camera rule) and named in the summary's notes.
        token_mask: bool[B, T] or bool[T], False = pad. Default: pieces that are not "".
        out_dir: the attention_viz folder.
        options: what to draw and how (selections, color scale, colormap, zoom, quality, workers, resume,
            batch_index): pi0viz.render.RenderOptions; default RenderOptions().
        num_state_tokens: 1 for pi0 (default), 0 for pi0.5.
        num_action_tokens: H; default Q (attention_queries="actions") or Q - num_state_tokens.
        attention_kind: "probs" (default) or "logits".
        attention_heads: "max" when the heads were already max-fused on the device (K = G = 1), e.g. a capture
            with CaptureOptions(fuse_heads=True); rows then need not sum to 1. Default "all".
        attention_queries: "actions" for a capture of the action rows only (CaptureOptions(action_rows_only=True),
            Q = A); default "suffix", or "actions" when num_action_tokens == Q and there are state tokens.
        attention_keys: "prefix" for a capture of the prefix keys only (S = cameras + prompt); default: inferred
            from S.
        patch_grid: image tokens per camera, (rows, cols), raster order; default (16, 16).
        diffusion_times, step_indices, layer_indices: what the D and L axes hold (default: all steps
            0..D-1 with t = 1, 1 - 1/D, ...; all layers 0..L-1). The indices name the output folders.
        token_ids: int[B, T] or int[T] prompt token ids (default zeros: only the pieces are drawn).
        prompt: str[B] or str, the raw prompt. actions: float32[B, A, action_dims] sampled actions.
        progress: called with the number of finished files as work completes.

    Returns:
        a RenderSummary (files, bytes, seconds, out_dir = the inference_timestep_N folder).
    """
    fields = dict(images=images, camera_names=camera_names, token_pieces=token_pieces, image_masks=image_masks,
                  token_mask=token_mask, num_state_tokens=num_state_tokens, num_action_tokens=num_action_tokens,
                  attention_kind=attention_kind, attention_heads=attention_heads, attention_queries=attention_queries,
                  attention_keys=attention_keys, patch_grid=patch_grid, diffusion_times=diffusion_times,
                  step_indices=step_indices, layer_indices=layer_indices, token_ids=token_ids, prompt=prompt,
                  actions=actions)
    if isinstance(attention, CaptureBundle):
        given = sorted(k for k, v in fields.items() if v is not None)
        if given:
            raise BundleError(f"visualize_attention got a CaptureBundle and also its field(s) {given}; pass either "
                              "a complete bundle or the attention array with its fields")
        bundle = attention
    else:
        if images is None or camera_names is None or token_pieces is None:
            missing = [k for k in ("images", "camera_names", "token_pieces") if fields[k] is None]
            raise BundleError(f"visualize_attention needs {missing} with an attention array (or pass a CaptureBundle)")
        bundle = bundle_from_fields(attention, **fields, inference_step=inference_step)
    step = inference_step if inference_step is not None else (bundle.inference_step or 0)
    return render_bundle(bundle, out_dir, options, inference_step=step, progress=progress)


def bundle_from_fields(
    attention: Any,
    *,
    images: Any,
    camera_names: Sequence[str],
    token_pieces: Any,
    image_masks: Any = None,
    token_mask: Any = None,
    num_state_tokens: int | None = None,
    num_action_tokens: int | None = None,
    attention_kind: Literal["probs", "logits"] | None = None,
    attention_heads: Literal["all", "max"] | None = None,
    attention_queries: Literal["suffix", "actions"] | None = None,
    attention_keys: Literal["all", "prefix"] | None = None,
    patch_grid: tuple[int, int] | None = None,
    diffusion_times: Sequence[float] | None = None,
    step_indices: Sequence[int] | None = None,
    layer_indices: Sequence[int] | None = None,
    token_ids: Any = None,
    prompt: Any = None,
    actions: Any = None,
    inference_step: int | None = None,
) -> CaptureBundle:
    """A validated CaptureBundle from the fields `visualize_attention` takes (same conversions and defaults)."""
    att = _as_float_array(attention)
    if att.ndim != 7:
        raise BundleError(f"attention must be [D, L, B, K, G, Q, S] (7-d), got shape {list(att.shape)}")
    B, Q = att.shape[2], att.shape[5]
    grid = (16, 16) if patch_grid is None else (int(patch_grid[0]), int(patch_grid[1]))
    state = 1 if num_state_tokens is None else int(num_state_tokens)
    names = [str(n) for n in camera_names]
    pieces = _per_batch(_text_array(token_pieces, "token_pieces"), B, "token_pieces")
    mask = (pieces != "") if token_mask is None else _per_batch(np.asarray(token_mask, bool), B, "token_mask")
    ids = (np.zeros(pieces.shape, np.int32) if token_ids is None
           else _per_batch(np.asarray(token_ids), B, "token_ids"))
    if attention_queries is None:  # the action rows only: Q holds exactly the action tokens
        attention_queries = "actions" if num_action_tokens is not None and int(num_action_tokens) == Q and state else \
            "suffix"
    if num_action_tokens is None:
        num_action_tokens = Q if attention_queries == "actions" else Q - state
    if attention_keys is None:  # S = cameras + prompt only
        prefix_keys = len(names) * grid[0] * grid[1] + pieces.shape[1]
        attention_keys = "prefix" if att.shape[6] == prefix_keys else "all"
    D = att.shape[0]
    if image_masks is None and isinstance(images, Mapping):  # cameras the caller left out are padded slots
        image_masks = {n: n in images for n in names}
    if prompt is not None:
        prompt = _text_array(prompt, "prompt").reshape(-1)
        prompt = np.repeat(prompt, B) if prompt.shape == (1,) and B > 1 else prompt
    return CaptureBundle(
        attention=att,
        camera_names=names,
        images=_images(images, names, B, grid),
        image_masks=_image_masks(image_masks, names, B),
        token_ids=ids,
        token_pieces=pieces,
        token_mask=mask,
        num_state_tokens=state,
        num_action_tokens=int(num_action_tokens),
        diffusion_times=(_finite(diffusion_times, "diffusion_times") if diffusion_times is not None
                         else (1.0 - np.arange(D) / max(D, 1)).astype(np.float32)),
        patch_grid=grid,
        attention_kind=attention_kind or "probs",
        attention_heads=attention_heads or "all",
        attention_queries=attention_queries,
        attention_keys=attention_keys,
        step_indices=None if step_indices is None else np.asarray(step_indices, np.int32),
        layer_indices=None if layer_indices is None else np.asarray(layer_indices, np.int32),
        prompt=prompt,
        inference_step=inference_step,
        actions=None if actions is None else np.asarray(actions, np.float32),
    )


def _per_batch(a: np.ndarray, B: int, name: str) -> np.ndarray:
    """[T] -> [1, T]; anything but [B, T] is refused."""
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[0] != B:
        raise BundleError(f"{name} must be [B={B}, T] or [T], got shape {list(a.shape)}")
    return a


def _as_float_array(x: Any) -> np.ndarray:
    a = _array(x, "attention")
    if a.dtype not in (np.float16, np.float32):
        if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":  # text, objects, bools, complex: not scores
            raise BundleError(f"attention has dtype {a.dtype}; expected float16/float32 (or bfloat16, float64, "
                              "integers) probabilities or scores")
        a = a.astype(np.float32)  # bfloat16 (ml_dtypes), float64, ints
    return a


def _finite(value: Any, name: str) -> np.ndarray:
    """float32 values that are all finite; BundleError naming `name` otherwise (NaN would label a folder)."""
    a = _array(value, name)
    if a.dtype.kind not in "fiu" or not np.isfinite(a.astype(np.float64)).all():
        raise BundleError(f"{name} must be finite numbers, got {a.reshape(-1)[:4].tolist()!r:.80}")
    return a.astype(np.float32)


def _text_array(value: Any, name: str) -> np.ndarray:
    """str array from text (bytes must be UTF-8); BundleError naming `name` otherwise."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{name} is bytes that are not UTF-8; expected text") from None
    try:
        raw = np.asarray(value)
        if raw.dtype.kind == "O" and not all(isinstance(v, str) for v in raw.reshape(-1)):
            raise TypeError("it holds items that are not text")
        if raw.dtype.kind not in "USO" and raw.size:  # an empty list arrives as float64: no pieces at all
            raise TypeError(f"dtype {raw.dtype}")
        return raw.astype(str)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise BundleError(f"{name} must be text (str or a list of str), got {type(value).__name__} "
                          f"({' '.join(str(err).split())[:80]})") from None


def _to_uint8(img: np.ndarray, name: str = "images") -> np.ndarray:
    """uint8 as given; integers in 0..255; floats in [0, 1], or the model's [-1, 1] (when any value is negative).
    Anything else (NaN, inf, floats beyond those ranges such as 0..255 floats, integers outside 0..255, bools,
    text, an empty image) is a BundleError naming `name` and the range expected: it would draw a wrong picture."""
    expected = "uint8 0..255, integers 0..255, or float in [0, 1] or [-1, 1]"
    if img.size == 0:
        raise BundleError(f"{name} is empty (shape {list(img.shape)}); expected {expected} pixels")
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind in "iu":
        lo, hi = int(img.min()), int(img.max())
        if lo < 0 or hi > 255:
            raise BundleError(f"{name} holds integers {lo}..{hi}; expected {expected}")
        return img.astype(np.uint8)
    if img.dtype.kind != "f":
        raise BundleError(f"{name} has dtype {img.dtype}; expected {expected}")
    f = img.astype(np.float32)
    if not np.isfinite(f).all():
        raise BundleError(f"{name} holds NaN or infinite values; expected {expected}")
    lo, hi = float(f.min()), float(f.max())
    if lo < -1.0 or hi > 1.0:
        raise BundleError(f"{name} holds floats {lo:.4g}..{hi:.4g}; expected {expected} (divide 0..255 floats by "
                          "255, or pass uint8)")
    if lo < 0:  # the model's [-1, 1] convention
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
            a = _to_uint8(_array(images[n], f"images[{n!r}]"), f"images[{n!r}]")
            a = a[None] if a.ndim == 3 else a
            if a.ndim != 4 or a.shape[0] != B or a.shape[-1] != 3:
                raise BundleError(f"images[{n!r}] must be [H, W, 3] or [B={B}, H, W, 3] RGB, got {list(a.shape)}")
            if a.shape[1:3] != want:
                a = np.stack([resize_with_pad(im, *want) for im in a])
            per_cam.append(a)
        return np.stack(per_cam, axis=1)
    a = _to_uint8(_array(images, "images"))
    a = a[None] if a.ndim == 4 else a
    if a.ndim != 5 or a.shape[:2] != (B, len(names)) or a.shape[-1] != 3:
        raise BundleError(f"images must be [B={B}, C={len(names)}, H, W, 3] or [C, H, W, 3] RGB, got {list(a.shape)}")
    return a


def _array(value: Any, name: str) -> np.ndarray:
    """np.asarray(value), with a ragged or unconvertible value named as a BundleError instead of numpy's error."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise BundleError(f"{name} is not a regular array ({' '.join(str(err).split())[:120]})") from None


def _mask_values(value: Any, name: str) -> np.ndarray:
    """bool values (numpy bools, or integers 0 / 1); anything else is refused rather than read as truthy."""
    a = _array(value, name)
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind in "iu" and a.size and int(a.min()) >= 0 and int(a.max()) <= 1:
        return a.astype(bool)
    if a.dtype.kind in "iu" and not a.size:
        return a.astype(bool)
    raise BundleError(f"{name} must be bools (True = a real camera, False = a padded slot), got "
                      f"{a.dtype} {a.reshape(-1)[:4].tolist()!r:.80}")


def _image_masks(masks: Any, names: list[str], B: int) -> np.ndarray:
    """[B, C] bool from bool[B, C], bool[C] or {camera name: bool or bool[B]} (every key a camera of `names`)."""
    if masks is None:
        return np.ones((B, len(names)), bool)
    if isinstance(masks, Mapping):
        unknown = sorted(map(str, set(masks) - set(names)))
        if unknown:
            raise BundleError(f"image_masks has unknown camera(s) {unknown}; cameras are {names}")
        columns = []
        for n in names:
            v = _mask_values(masks.get(n, True), f"image_masks[{n!r}]")
            if v.shape not in ((), (B,)):
                raise BundleError(f"image_masks[{n!r}] must be a bool or bool[B={B}], got shape {list(v.shape)}")
            columns.append(np.broadcast_to(v, (B,)))
        m = np.stack(columns, axis=1)
    else:
        m = _mask_values(masks, "image_masks")
        if m.ndim == 1 and m.shape[0] == len(names):
            m = np.broadcast_to(m[None], (B, len(names)))
    if m.shape != (B, len(names)):
        raise BundleError(f"image_masks must be [B={B}, C={len(names)}] or [C={len(names)}] bools (one per camera "
                          f"{names}), got shape {list(m.shape)}")
    return np.ascontiguousarray(m)
