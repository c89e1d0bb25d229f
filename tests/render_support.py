"""Helpers for the render tests: small synthetic calls with known hot spots, and reading the JPEGs back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from pi0viz.core.colormap import colormap_lut
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle

LUT = colormap_lut("inferno").astype(np.float32)
GRID = 16
PATCH_PX = 14


def decode(path: str | os.PathLike) -> np.ndarray:
    """[h, w, 3] uint8 from a JPEG, decoded with PIL (an independent decoder)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def nearest_level(rgb: np.ndarray) -> np.ndarray:
    """Colormap level (0..255) whose color is closest to each [..., 3] color."""
    d = ((rgb[..., None, :].astype(np.float32) - LUT) ** 2).sum(-1)
    return d.argmin(-1)


def block_levels(img: np.ndarray, zoom: int = 1) -> np.ndarray:
    """[16, 16] colormap level of each patch block of a camera map drawn with alpha = 1 (pure heat map).

    Uses the median of each block's interior (a 2 px border is skipped: JPEG ringing at block edges).
    """
    b = PATCH_PX * zoom
    heat = img[: GRID * b, : GRID * b].reshape(GRID, b, GRID, b, 3)[:, 2:-2, :, 2:-2]
    per_block = heat.transpose(0, 2, 1, 3, 4).reshape(GRID, GRID, -1, 3)  # [16, 16, pixels, 3]
    med = np.median(per_block, axis=2)
    return nearest_level(med)


def hot_bundle(*, steps: int = 4, layers: int = 6, actions: int = 18, image_masks=(True, True, True), **kw):
    """A pi0-shaped bundle with, in cell (d=3, a=17, l=5): head 6 puts 0.9 on base patch (4, 11) and head 2
    puts 0.5 on prompt token 7 (the rest is a thin uniform-ish spread)."""
    b = synthetic_bundle(num_steps=steps, num_layers=layers, num_action_tokens=actions, image_masks=image_masks, **kw)
    lay = b.layout
    place_hot_key(b, step=3, layer=5, action_token=17, head=6, key=lay.camera_region(0).start + 4 * GRID + 11, mass=0.9)
    place_hot_key(b, step=3, layer=5, action_token=17, head=2, key=lay.text_region.start + 7, mass=0.5)
    return b


def jpgs(root: str | os.PathLike) -> list[Path]:
    return sorted(Path(root).rglob("*.jpg"))


def tree_bytes(root: str | os.PathLike) -> dict[str, bytes]:
    """{relative path: content} of every file under root (temporaries included, so leftovers show)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cell(root: str | os.PathLike, step: int, action: int, layer: int, inference: int = 0) -> Path:
    return (Path(root) / f"inference_timestep_{inference}" / f"diffusion_timestep_{step}" / f"action_token_{action}"
            / f"layer_{layer}")
