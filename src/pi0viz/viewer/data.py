"""Compact arrays the viewer page colors in the browser: one capture bundle -> a few byte blocks.

Why bytes and not JPEGs: one pi0 call is 9,000 cells x 4 images = 36,000 JPEGs (~0.5 GB); the same maps as
uint8 are 7.3 MB and the browser recolors one cell (816 values) in well under a millisecond.
See docs/viewer.md for the measurements.

The maps cover the drawn keys R of pi0viz.core.maps (the drawn cameras' patches, then the non-pad prompt tokens),
so a masked or silent camera or a pad costs nothing. Encoding (little-endian, row-major):
- fused  uint8 [D, L, A, R]: the fused value (max over heads of the attention probability) of drawn key r in
  cell (d, l, a) is `(q / 255) ** 2 * cell_max[d, l, a]`. Square-root quantization keeps small values (which
  the log scale shows) fine: at 1e-3 of the cell max 16x finer than linear uint8 (first nonzero level 1.5e-5
  of the cell max); it is exact at 0 and at the cell maximum; relative error near the top <= 0.4 %.
- cell_max float32 [D, L, A]: max over heads and drawn keys.
- heads  uint8 [L, A, N, R] per diffusion step d, quantized against the same `cell_max`, so the fused map
  equals the max over the decoded head maps exactly.
- mass   uint16 [D, L, A, N + 1, M]: attention mass (sum of probabilities) per key region M (every camera
  slot, the prompt, the state, the actions), for each head and, at index N, the mean over heads; value = q / 65535.

A pi0-FAST decoding bundle (pi0viz.capture/2, `decode_call_arrays`) uses the same encoding with D = the stored decode
steps, A = 1 (one query per step: the token being generated) and N = 1 (fused maps only); its drawn keys R are the
drawn cameras' patches, the non-pad prompt tokens, then the Jg generated tokens' slots (region "generated": step j's
row is 0 past token j), and its mass regions M are every camera slot, the prompt, the generated tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import simplejpeg

from pi0viz.core.bundle import BundleError, CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.maps import decode_maps, fused_map_steps

_Q8 = 255.0
_Q16 = 65535.0


@dataclasses.dataclass
class CallArrays:
    """The viewer's data for one inference call (one batch element of one bundle).

    Shapes: D steps, L layers, A action tokens, N heads, R drawn keys, M key regions (for the mass).
    """

    inference_step: int
    fused: np.ndarray  # uint8 [D, L, A, R]
    cell_max: np.ndarray  # float32 [D, L, A]
    heads: list[np.ndarray] | None  # D x uint8 [L, A, N, R]; None when not asked or the bundle holds fused heads
    mass: np.ndarray  # uint16 [D, L, A, N + 1, M]
    drawn_keys: np.ndarray  # int [R] indices into the key axis S
    drawn_regions: list[tuple[str, int, int]]  # (camera name | "text", start, stop) ranges into R
    mass_regions: list[tuple[str, str]]  # (name, kind) of the M regions
    images: dict[str, bytes]  # camera name -> JPEG of the model-input image (unmasked cameras only)
    image_size: tuple[int, int]  # (height, width) of the model-input images
    pieces: list[str]  # T prompt pieces (pads included; `token_mask` says which are drawn)
    token_mask: list[bool]  # [T]
    image_masks: list[bool]  # [C]
    prompt: str
    generated_ids: list[int] | None = None  # decoding: [Jg] the ids generated in the call
    generated_pieces: list[str] | None = None  # decoding: [Jg] their text, when the bundle carries it


def _quantize_sqrt(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """uint8 round(255 * sqrt(x / scale)); `scale` broadcasts against x and is > 0."""
    r = np.sqrt(np.clip(x / scale, 0.0, 1.0))
    return np.rint(r * _Q8).astype(np.uint8)


def call_arrays(bundle: CaptureBundle, *, batch: int = 0, with_heads: bool = True, index: int = 0) -> CallArrays:
    """Reduce one bundle (one batch element) to the viewer's arrays; see the module docstring for the encoding.

    `index` is used as the inference step when the bundle does not carry one. Raises BundleError or
    pi0viz.core.fusion.FusionError (e.g. probabilities that are really logits) with what was expected.
    """
    if not 0 <= batch < bundle.batch_size:
        raise BundleError(f"batch {batch} out of range: the bundle has batch size {bundle.batch_size}")
    layout = bundle.layout
    # The renderer's own fusion pass and camera rule (pi0viz.core.maps), one step at a time (the temporaries stay
    # one step in size; pi0: 25 MB).
    stream = fused_map_steps(bundle, batch_index=batch)
    image_masks, keys, drawn_regions = stream.drawn.image_masks, stream.drawn.keys, stream.drawn.regions
    regions = layout.regions()
    D, L = bundle.attention.shape[:2]
    A, N, R = layout.num_action_tokens, bundle.attention.shape[3] * bundle.attention.shape[4], len(keys)
    fused = np.empty((D, L, A, R), np.uint8)
    cell_max = np.empty((D, L, A), np.float32)
    mass = np.empty((D, L, A, N + 1, len(regions)), np.uint16)
    heads: list[np.ndarray] | None = [] if (with_heads and bundle.attention_heads == "all") else None
    for d, step in enumerate(stream):
        region_mass = np.concatenate([step.layout_mass, step.layout_mass.mean(2, keepdims=True)], 2)  # [L, A, N+1, M]
        mass[d] = np.rint(np.clip(region_mass, 0, 1) * _Q16).astype(np.uint16)
        cmax = step.fused.max(axis=2) if R else np.zeros((L, A), np.float32)  # [L, A]
        cell_max[d] = cmax
        scale = np.where(cmax > 0, cmax, 1.0)[:, :, None]  # [L, A, 1]
        fused[d] = _quantize_sqrt(step.fused, scale)
        if heads is not None:
            heads.append(_quantize_sqrt(step.heads.transpose(0, 2, 1, 3), scale[:, :, None]))  # [L, A, N, R]
    images = {}
    for c, name in enumerate(bundle.camera_names):
        if image_masks[batch, c]:
            images[name] = simplejpeg.encode_jpeg(np.ascontiguousarray(bundle.images[batch, c]), quality=92,
                                                  colorspace="RGB")
    step = bundle.inference_step if bundle.inference_step is not None else index
    return CallArrays(
        inference_step=int(step),
        fused=fused,
        cell_max=cell_max,
        heads=heads,
        mass=mass,
        drawn_keys=keys,
        drawn_regions=[(str(n), int(s), int(e)) for n, s, e in drawn_regions],
        mass_regions=[(r.name if r.kind != "text" else "prompt", r.kind) for r in regions],
        images=images,
        image_size=(int(bundle.images.shape[2]), int(bundle.images.shape[3])),
        pieces=[str(p) for p in bundle.token_pieces[batch]],
        token_mask=[bool(m) for m in bundle.token_mask[batch]],
        image_masks=[bool(m) for m in image_masks[batch]],
        prompt=str(bundle.prompt[batch]) if bundle.prompt is not None else "",
    )


def decode_call_arrays(bundle: DecodeBundle, *, batch: int = 0, index: int = 0) -> CallArrays:
    """Reduce one decoding bundle (pi0-FAST; one batch element) to the viewer's arrays: the module docstring's
    encoding with D = decode steps, A = 1, N = 1 and the generated tokens as the last drawn region.

    Raises BundleError or pi0viz.core.fusion.FusionError with what was expected.
    """
    if not 0 <= batch < bundle.batch_size:
        raise BundleError(f"batch {batch} out of range: the bundle has batch size {bundle.batch_size}")
    maps = decode_maps(bundle, batch_index=batch)  # the renderer's fusion and camera rule
    values = np.concatenate([maps.fused, maps.generated], axis=-1)  # [J, L, R + Jg]
    J, L, R = values.shape
    cell_max = values.max(axis=-1, initial=0.0).astype(np.float32)  # [J, L]
    scale = np.where(cell_max > 0, cell_max, 1.0)[..., None]
    fused = _quantize_sqrt(values, scale)[:, :, None, :]  # [J, L, 1, R]
    C = len(bundle.camera_names)
    drawn_mass = dict(zip(maps.drawn.cameras, range(len(maps.drawn.cameras))))
    mass_f = np.zeros((J, L, C + 2), np.float32)  # every camera slot (undrawn: 0), the prompt, the generated
    for c, n in drawn_mass.items():
        mass_f[..., c] = maps.region_mass[..., n]
    mass_f[..., C:] = maps.region_mass[..., -2:]
    mass_q = np.rint(np.clip(mass_f, 0, 1) * _Q16).astype(np.uint16)
    mass = np.repeat(mass_q[:, :, None, None, :], 2, axis=3)  # [J, L, 1, N + 1 = 2, M]: the one head, its mean
    p_len, Jg = bundle.num_prefix_keys, bundle.num_generated
    keys = np.concatenate([maps.drawn.keys, p_len + np.arange(Jg)]).astype(np.int64)
    regions = [(str(n), int(s), int(e)) for n, s, e in maps.drawn.regions] + [("generated", R - Jg, R)]
    masks = maps.drawn.image_masks
    images = {name: simplejpeg.encode_jpeg(np.ascontiguousarray(bundle.images[batch, c]), quality=92,
                                           colorspace="RGB")
              for c, name in enumerate(bundle.camera_names) if masks[batch, c]}
    step = bundle.inference_step if bundle.inference_step is not None else index
    return CallArrays(
        inference_step=int(step), fused=fused, cell_max=cell_max[:, :, None], heads=None, mass=mass,
        drawn_keys=keys, drawn_regions=regions,
        mass_regions=[*((str(n), "camera") for n in bundle.camera_names), ("prompt", "text"),
                      ("generated", "generated")],
        images=images, image_size=(int(bundle.images.shape[2]), int(bundle.images.shape[3])),
        pieces=[str(p) for p in bundle.token_pieces[batch]], token_mask=[bool(m) for m in bundle.token_mask[batch]],
        image_masks=[bool(m) for m in masks[batch]],
        prompt=str(bundle.prompt[batch]) if bundle.prompt is not None else "",
        generated_ids=[int(i) for i in bundle.generated_ids[batch]],
        generated_pieces=None if bundle.generated_pieces is None else [str(p) for p in bundle.generated_pieces[batch]],
    )


def decode_fused(call: CallArrays) -> np.ndarray:
    """float32 [D, L, A, R]: the fused maps exactly as the page decodes them (for tests and benchmarks)."""
    r = call.fused.astype(np.float32) / _Q8
    return r * r * call.cell_max[..., None]
