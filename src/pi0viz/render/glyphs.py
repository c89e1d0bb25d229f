"""Text as pixels without per-file font rendering.

Fonts are rasterized with Pillow once per render call: static strings (camera names, prompt pieces) become
alpha masks when the layout is built, and the few numbers that change per cell (max, mass, scale top) are
pasted from a monospace glyph atlas, which is a numpy gather instead of a FreeType call per file.
The fonts are the DejaVu faces that ship with matplotlib, so they exist wherever pi0viz is installed.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=None)
def font(size: int, mono: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (or Sans Mono) at `size` pixels."""
    import matplotlib

    name = "DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf"
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)


def line_height(f: ImageFont.FreeTypeFont) -> int:
    ascent, descent = f.getmetrics()
    return ascent + descent


def text_mask(text: str, f: ImageFont.FreeTypeFont, width: int | None = None) -> np.ndarray:
    """Alpha mask of `text` drawn at the top left, one line.

    Returns:
        [line_height, width or text width] uint8, 255 = ink.
    """
    w = int(np.ceil(f.getlength(text))) + 1 if width is None else width
    img = Image.new("L", (max(w, 1), line_height(f)), 0)
    ImageDraw.Draw(img).text((0, 0), text, font=f, fill=255)
    return np.asarray(img)


def fit_text(text: str, f: ImageFont.FreeTypeFont, max_width: int) -> str:
    """`text`, cut with an ellipsis so that it fits in `max_width` pixels."""
    if f.getlength(text) <= max_width:
        return text
    while text and f.getlength(text + "…") > max_width:
        text = text[:-1]
    return text + "…"


class GlyphAtlas:
    """Printable ASCII in a monospace font, as [95, h, w] alpha masks, for strings that change per cell."""

    def __init__(self, size: int) -> None:
        f = font(size, mono=True)
        self.size = size
        self.height = line_height(f)
        self.advance = int(round(f.getlength("M")))
        self.glyphs = np.stack([text_mask(chr(c), f, self.advance) for c in range(32, 127)])  # [95, h, w]

    def mask(self, text: str) -> np.ndarray:
        """[h, len(text) * w] uint8 alpha mask of an ASCII string (other characters become '?')."""
        codes = np.frombuffer(text.encode("ascii", "replace"), np.uint8).astype(np.intp) - 32
        codes[(codes < 0) | (codes >= 95)] = ord("?") - 32
        g = self.glyphs[codes]  # [n, h, w]
        return g.transpose(1, 0, 2).reshape(self.height, -1)


def paint(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, ink: tuple[int, int, int] | np.ndarray) -> None:
    """Blend `ink` into `canvas` [H, W, 3] uint8 through `mask` [h, w] uint8 at (x, y), clipped to the canvas."""
    H, W = canvas.shape[:2]
    h, w = min(mask.shape[0], H - y), min(mask.shape[1], W - x)
    if h <= 0 or w <= 0:
        return
    a = mask[:h, :w, None].astype(np.uint16)
    region = canvas[y:y + h, x:x + w]
    ink16 = np.asarray(ink, np.uint16)
    region[...] = ((region * (255 - a) + ink16 * a + 127) // 255).astype(np.uint8)
