"""The viewer's "prefix" panel data: a call's `pi0viz.prefix/1` side file (the prefix's own attention, heads max)
-> a few byte blocks the page colors in the browser.

Only what the panel draws is kept: the unmasked cameras' patches (R_img = C' x N) and the non-pad prompt slots
(T'), every stored layer (L). Three blocks, each quantized per row like the action tokens' maps (viewer/data.py):
`uint8 q`, value = `(q / 255) ** 2 * row_max` (square-root levels: exact at 0 and at the row's maximum):

    pp  uint8[L, T', R_img]      prompt token t reads the patches         (prompt_to_image), row max ppm float32[L, T']
    pq  uint8[L, R_img, T']      an image patch reads the prompt tokens   (image_to_prompt), row max pqm float32[L, R_img]
    pg  uint8[L, R_img, R_img]   an image patch reads the patches         (image_to_image),  row max pgm float32[L, R_img]

pi0 at full size (2 LIBERO cameras, 18 layers, ~20 prompt tokens): pp + pq ~0.4 MB, pg 4.7 MB (base64: x 4/3);
pg goes to a side file whenever the fused maps do. The tiny pi0 (4 layers): ~1.1 MB in all.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from typing import Any

import numpy as np
import simplejpeg

from pi0viz.core.prefix_bundle import PrefixAttention, load_prefix

_Q8 = 255.0


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float[..., K] -> (uint8[..., K] square-root levels of each row against its maximum, float32[...] the
    maxima). A row of zeros is all level 0 (max 0)."""
    v = np.nan_to_num(np.asarray(x, np.float32), nan=0.0).clip(min=0.0)
    top = v.max(axis=-1) if v.shape[-1] else np.zeros(v.shape[:-1], np.float32)
    safe = np.where(top > 0, top, 1.0)[..., None]
    q = np.rint(np.sqrt(np.clip(v / safe, 0.0, 1.0)) * _Q8).astype(np.uint8)
    return q, top.astype(np.float32)


def dequantize_rows(q: np.ndarray, top: np.ndarray) -> np.ndarray:
    """float32[..., K]: the values the page decodes from `quantize_rows`' output."""
    r = q.astype(np.float32) / _Q8
    return r * r * np.asarray(top, np.float32)[..., None]


@dataclasses.dataclass
class PrefixArrays:
    """One call's prefix panel: the three quantized blocks (module docstring) and what names their axes."""

    blocks: dict[str, np.ndarray]  # pp, ppm, pq, pqm, pg, pgm
    cameras: list[str]  # the drawn (unmasked) cameras, in the file's order: R_img = len(cameras) * N
    camera_slots: list[int]  # their slots in the file
    grid: tuple[int, int]
    layers: list[int]
    slots: list[int]  # the non-pad prompt slots (T')
    pieces: list[str]  # their pieces
    images: dict[str, bytes]  # JPEG per drawn camera
    image_size: tuple[int, int]  # (h, w) of the model's images
    prompt: str
    inference_step: int | None


def prefix_arrays(prefix: PrefixAttention) -> PrefixArrays:
    """Select and quantize what the panel draws (module docstring)."""
    n = prefix.num_patches
    slots = [int(s) for s in np.flatnonzero(prefix.token_mask)]
    cams = [c for c, keep in enumerate(prefix.image_masks) if keep]
    img = np.concatenate([c * n + np.arange(n) for c in cams]) if cams else np.zeros(0, np.int64)
    tok = np.asarray(slots, np.int64)
    blocks: dict[str, np.ndarray] = {}
    for name, block in (("pp", prefix.prompt_to_image[:, tok][:, :, img]),
                        ("pq", prefix.image_to_prompt[:, img][:, :, tok]),
                        ("pg", prefix.image_to_image[:, img][:, :, img])):
        blocks[name], blocks[name + "m"] = quantize_rows(block)
    images = {prefix.camera_names[c]: simplejpeg.encode_jpeg(np.ascontiguousarray(prefix.images[c]), quality=92,
                                                            colorspace="RGB") for c in cams}
    return PrefixArrays(blocks=blocks, cameras=[prefix.camera_names[c] for c in cams], camera_slots=cams,
                        grid=prefix.patch_grid, layers=[int(x) for x in prefix.layer_indices], slots=slots,
                        pieces=[str(prefix.token_pieces[s]) for s in slots], images=images,
                        image_size=(int(prefix.images.shape[1]), int(prefix.images.shape[2])), prompt=prefix.prompt,
                        inference_step=prefix.inference_step)


def read_prefix(item: "PrefixAttention | str | os.PathLike") -> tuple[PrefixAttention, str]:
    """(the prefix attention, a name for captions) of a PrefixAttention or a pi0viz.prefix/1 path."""
    if isinstance(item, PrefixAttention):
        return item, "prefix attention"
    return load_prefix(item), os.path.basename(os.fspath(item))


def prefix_meta(arrays: PrefixArrays, source: str, same_images: set[str]) -> dict[str, Any]:
    """The JSON-able description of a call's prefix panel; camera images in `same_images` are the call's own
    (already in the page) and are not embedded twice."""
    return {"source": source, "cameras": arrays.cameras, "grid": list(arrays.grid), "layers": arrays.layers,
            "imageSize": list(arrays.image_size),
            "slots": arrays.slots, "pieces": arrays.pieces, "prompt": arrays.prompt,
            "images": {name: "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
                       for name, jpeg in arrays.images.items() if name not in same_images}}
