"""The prefix's own attention (a `pi0viz.prefix/1` side file) as its own JPEG tree, beside the action tokens' tree
(which stays exactly as it is):

    prefix_attention/inference_timestep_N/layer_L/prompt_token_T/fused_attention_on_<camera>.jpg
        what prompt token T reads in each camera: its attention over the camera's patches (heads fused by max),
        over the image the model saw
    prefix_attention/inference_timestep_N/layer_L/image_region/<camera>_region_R_C/fused_attention_on_text.jpg
        which prompt tokens an image region reads: the region's patches' attention over the prompt (mean over the
        region's queries), the prompt drawn as boxes coloured by it, above the camera with the region outlined

Regions are blocks of `region` x `region` patches (default 4: 16 regions on pi0's 16 x 16 grid). Each image is
scaled to its own maximum (the caption gives it), as `render --scale cell` does.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pi0viz.core.colormap import colormap_lut, readable_ink
from pi0viz.core.prefix_bundle import PrefixAttention
from pi0viz.core.writes import atomic_write
from pi0viz.render.files import safe_names
from pi0viz.render.glyphs import font
from pi0viz.render.panels import CameraPainter, TextPainter, as_rgbx, display_piece, layout_prompt

PREFIX_TREE = "prefix_attention"
CAPTION_PX = 34


def _levels(values: np.ndarray) -> tuple[np.ndarray, float]:
    """uint8 levels of values scaled to their maximum, and that maximum."""
    v = np.nan_to_num(np.asarray(values, np.float32), nan=0.0)
    peak = float(v.max()) if v.size else 0.0
    scale = 255.0 / peak if peak > 0 else 0.0
    return np.clip(v * scale + 0.5, 0, 255).astype(np.uint8), peak


def _with_caption(rgb: np.ndarray, lines: Sequence[str]) -> bytes:
    """JPEG bytes of an RGB panel with caption lines below it."""
    h, w, _ = rgb.shape
    img = Image.new("RGB", (w, h + CAPTION_PX), (255, 255, 255))
    img.paste(Image.fromarray(np.ascontiguousarray(rgb)), (0, 0))
    draw, f = ImageDraw.Draw(img), font(11)
    for n, line in enumerate(lines[:2]):
        draw.text((3, h + 3 + 14 * n), line, font=f, fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def render_prefix(prefix: PrefixAttention, out_dir: str | os.PathLike, *, layers: Sequence[int] | None = None,
                  region: int = 4, colormap: str = "inferno") -> list[Path]:
    """Write the prefix_attention tree (module docstring) under `out_dir`; returns the files written.

    Args:
        layers: stored layer indices to draw (default all).
        region: patches per side of an image region.
    """
    lut = colormap_lut(colormap)
    rows, cols = prefix.patch_grid
    n = prefix.num_patches
    step = 0 if prefix.inference_step is None else prefix.inference_step
    root = Path(out_dir) / PREFIX_TREE / f"inference_timestep_{step}"
    stored = [int(l) for l in prefix.layer_indices]
    chosen = stored if layers is None else [l for l in stored if l in set(int(x) for x in layers)]
    cams = [c for c, keep in enumerate(prefix.image_masks) if keep]
    names = safe_names(prefix.camera_names)
    slots = [t for t, keep in enumerate(prefix.token_mask) if keep]
    painters = {c: CameraPainter(prefix.images[c], (rows, cols), lut) for c in cams}
    width = prefix.images.shape[2]
    text = layout_prompt(list(prefix.token_pieces), list(prefix.token_mask), width=width)
    text_painter = TextPainter(text, lut, readable_ink(lut))
    written: list[Path] = []
    for l in chosen:
        li = stored.index(l)
        layer_dir = root / f"layer_{l}"
        for t in slots:
            piece = display_piece(str(prefix.token_pieces[t]))
            for c in cams:
                levels, peak = _levels(prefix.prompt_to_image[li, t, c * n:(c + 1) * n])
                panel = np.empty(painters[c].shape, np.uint32)
                painters[c].draw(levels, panel)
                data = _with_caption(as_rgbx(panel)[..., :3], [
                    f"prompt token {t} '{piece}' reads {prefix.camera_names[c]}",
                    f"layer {l}, heads max; max {peak:.3f}, mass "
                    f"{float(prefix.prompt_to_image[li, t, c * n:(c + 1) * n].astype(np.float32).sum()):.3f}"])
                path = layer_dir / f"prompt_token_{t}" / f"fused_attention_on_{names[c]}.jpg"
                atomic_write(path, data)
                written.append(path)
        for c in cams:
            for r0 in range(0, rows, region):
                for c0 in range(0, cols, region):
                    grid = np.zeros((rows, cols), bool)
                    grid[r0:r0 + region, c0:c0 + region] = True
                    queries = c * n + np.flatnonzero(grid.reshape(-1))
                    reads = prefix.image_to_prompt[li, queries].astype(np.float32).mean(axis=0)  # [T]
                    levels, peak = _levels(reads[text.slots] if len(text.slots) else reads[:0])
                    panel = np.empty((text.height, text.width), np.uint32)
                    text_painter.draw(levels, panel)
                    image = np.array(prefix.images[c], copy=True)
                    ph, pw = image.shape[0] // rows, image.shape[1] // cols
                    y0, x0 = r0 * ph, c0 * pw
                    y1, x1 = min((r0 + region) * ph, image.shape[0]) - 1, min((c0 + region) * pw, image.shape[1]) - 1
                    for y, x in ((slice(y0, y1 + 1), slice(x0, x0 + 2)), (slice(y0, y1 + 1), slice(x1 - 1, x1 + 1)),
                                 (slice(y0, y0 + 2), slice(x0, x1 + 1)), (slice(y1 - 1, y1 + 1), slice(x0, x1 + 1))):
                        image[y, x] = (0, 255, 255)
                    rgb = np.concatenate([as_rgbx(panel)[..., :3], image], axis=0)
                    data = _with_caption(rgb, [
                        f"{prefix.camera_names[c]} rows {r0}-{min(r0 + region, rows) - 1}, cols "
                        f"{c0}-{min(c0 + region, cols) - 1} read:",
                        f"layer {l}, heads max; max {peak:.3f}, mass {float(reads.sum()):.3f}"])
                    path = (layer_dir / "image_region" / f"{names[c]}_region_{r0 // region}_{c0 // region}" /
                            "fused_attention_on_text.jpg")
                    atomic_write(path, data)
                    written.append(path)
    return written
