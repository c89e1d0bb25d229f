"""The three kinds of pixels pi0viz draws: camera heat-map overlays, the prompt's token map and captions.

Everything that does not change between cells (upsampled images, the prompt layout and its glyphs, caption
titles and colorbars) is prepared once per render call; per cell, a painter only gathers colormap rows by
level and blends them with integer arithmetic into a preallocated panel.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import numpy as np
from PIL import Image, ImageDraw

from pi0viz.render.glyphs import GlyphAtlas, fit_text, font, line_height, paint, text_mask

Upsample = Literal["nearest", "bilinear"]
DEFAULT_ZOOM = 1  # 224 x 224 model input -> 224 x 224 map: each 14 x 14 px patch keeps the pixels the model saw
DEFAULT_ALPHA = 0.6  # heat-map weight in the blend; the image stays readable under cold (dark) patches
CAPTION_INK = (20, 20, 20)
CAPTION_PAPER = (255, 255, 255)
TEXT_PAPER = (255, 255, 255)


def format_prob(value: float) -> str:
    """A probability in at most 7 characters: 0.412, 0.003, 2.1e-05, 0."""
    if value >= 0.001 or value == 0:
        return f"{value:.3f}" if value else "0"
    return f"{value:.1e}"


# -- captions -----------------------------------------------------------------------------------------


class Caption:
    """A strip under a panel, outside the image block, with the absolute scale of that panel.

        base_0_rgb                         <- title (static)
        max 0.900  mass 0.412              <- highest fused probability on the region; head-averaged mass
        0 [colorbar] 0.900                 <- the colors span 0 .. the scale top (0.900 here)
    """

    def __init__(self, title: str, width: int, lut: np.ndarray, atlas: GlyphAtlas, zoom: int = 1) -> None:
        self.atlas = atlas
        lh, pad = atlas.height, 2 * zoom
        self.rows = (pad, pad + lh, pad + 2 * lh)  # y of the three lines
        self.height = pad * 2 + 3 * lh
        self.width = width
        static = np.empty((self.height, width, 3), np.uint8)
        static[...] = CAPTION_PAPER
        title_font = font(atlas.size, mono=False)
        paint(static, text_mask(fit_text(title, title_font, width - 2 * pad), title_font), pad, self.rows[0], CAPTION_INK)
        zero = atlas.mask("0")
        paint(static, zero, pad, self.rows[2], CAPTION_INK)
        self.bar_x0 = pad + zero.shape[1] + pad
        self.bar_x1 = max(self.bar_x0 + 16, min(width - 8 * atlas.advance - pad, self.bar_x0 + width // 2))
        bar_y0, bar_y1 = self.rows[2] + lh // 4, self.rows[2] + lh - lh // 4
        ramp = np.linspace(0, 255, self.bar_x1 - self.bar_x0).round().astype(np.intp)
        static[bar_y0:bar_y1, self.bar_x0:self.bar_x1] = lut[ramp][None]
        self.static = static
        self.pad = pad

    def draw(self, out: np.ndarray, *, peak: float, mass: float, top: float) -> None:
        """Fill `out` [height, width, 3] with this caption for one cell."""
        out[...] = self.static
        paint(out, self.atlas.mask(f"max {format_prob(peak)}  mass {mass:.3f}"), self.pad, self.rows[1], CAPTION_INK)
        paint(out, self.atlas.mask(format_prob(top)), self.bar_x1 + self.pad, self.rows[2], CAPTION_INK)


# -- cameras ------------------------------------------------------------------------------------------


class CameraPainter:
    """Heat map of one camera's patches blended over its model-input image.

    With `zoom` z and an H x W image on a rows x cols patch grid, patch (r, c) covers exactly the pixel block
    [r * ph, (r + 1) * ph) x [c * pw, (c + 1) * pw) with ph = H / rows * z, pw = W / cols * z (pi0: 14 z px).
    "nearest" fills that block with one color; "bilinear" interpolates the levels between patch centers
    (smoother, but a hot patch then bleeds half a patch into its neighbors).
    """

    def __init__(self, image: np.ndarray, patch_grid: tuple[int, int], lut: np.ndarray, *, zoom: int = DEFAULT_ZOOM,
                 alpha: float = DEFAULT_ALPHA, upsample: Upsample = "nearest") -> None:
        H, W, _ = image.shape
        rows, cols = patch_grid
        if H % rows or W % cols:
            raise ValueError(f"image {H}x{W} is not a whole number of patches on a {rows}x{cols} grid")
        self.grid = (rows, cols)
        self.block = (H // rows * zoom, W // cols * zoom)
        self.shape = (H * zoom, W * zoom)
        self.upsample = upsample
        a = int(round(alpha * 256))  # blend weights in 1/256: out = (img * (256 - a) + color * a) >> 8, no overflow
        big = image.repeat(zoom, axis=0).repeat(zoom, axis=1)  # [H z, W z, 3]
        self.base = (big.astype(np.uint16) * (256 - a)).reshape(rows, self.block[0], cols, self.block[1], 3)
        self.lut_weighted = lut.astype(np.uint16) * a  # [256, 3]
        self.sum = np.empty_like(self.base)
        if upsample == "bilinear":
            self.rows_w = _bilinear_weights(rows, self.shape[0])  # [H z, rows]
            self.cols_w = _bilinear_weights(cols, self.shape[1])  # [W z, cols]
        elif upsample != "nearest":
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")

    def draw(self, levels: np.ndarray, out: np.ndarray) -> None:
        """Paint `levels` [rows * cols] uint8 (raster order) into `out` [H z, W z, 3] uint8."""
        rows, cols = self.grid
        if self.upsample == "nearest":
            colors = self.lut_weighted[levels].reshape(rows, 1, cols, 1, 3)  # one color per patch block
            np.add(self.base, colors, out=self.sum)
        else:
            smooth = self.rows_w @ levels.reshape(rows, cols).astype(np.float32) @ self.cols_w.T  # [H z, W z]
            index = (smooth + 0.5).astype(np.uint8)
            np.add(self.base.reshape(*self.shape, 3), self.lut_weighted[index], out=self.sum.reshape(*self.shape, 3))
        np.right_shift(self.sum.reshape(*self.shape, 3), 8, out=out, casting="unsafe")


def _bilinear_weights(n: int, size: int) -> np.ndarray:
    """[size, n] interpolation matrix from n patch centers to `size` pixel centers (edges clamp)."""
    pos = (np.arange(size) + 0.5) * n / size - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(np.float32)
    w = np.zeros((size, n), np.float32)
    w[np.arange(size), lo] += 1 - frac
    w[np.arange(size), hi] += frac
    return w


# -- the prompt ---------------------------------------------------------------------------------------


def display_piece(piece: str) -> str:
    """What a prompt piece looks like in the map: word markers dropped, whitespace and control made visible.

    SentencePiece's "▁" (start of a word) is dropped because every token gets its own box; BOS shows as its
    piece (e.g. "<bos>"), the trailing newline as "↵", a bare space as "␣".
    """
    text = piece[1:] if piece.startswith("▁") else piece
    text = text.replace("▁", " ")
    text = text.replace("\n", "↵").replace("\r", "↵").replace("\t", "⇥")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    if not text.strip():
        return "␣" * max(len(text), 1)
    return text


@dataclasses.dataclass(frozen=True)
class TextLayout:
    """Where each prompt token sits in the text map; computed once per prompt.

    Attributes:
        width, height: size of the token area in pixels (the caption goes below it).
        boxes: [n, 4] int (x0, y0, x1, y1), end-exclusive, one per drawn token, in prompt order.
        slots: [n] index of each drawn token in the prompt's T slots (pads are skipped).
        labels: the text drawn in each box.
        box_index: [height, width] int32, the box under each pixel; n = background.
        glyphs: [height, width] uint8 alpha of the labels' ink.
    """

    width: int
    height: int
    boxes: np.ndarray
    slots: np.ndarray
    labels: tuple[str, ...]
    box_index: np.ndarray
    glyphs: np.ndarray


def layout_prompt(pieces: Sequence[str], mask: Sequence[bool], *, width: int, zoom: int = 1) -> TextLayout:
    """Place the valid prompt tokens left to right in boxes, wrapping at `width` pixels.

    Args:
        pieces: [T] decoded token pieces. mask: [T] bool, False = pad (not drawn).
    """
    f = font(13 * zoom)
    lh = line_height(f)
    margin, gap, pad_x, pad_y = 4 * zoom, 3 * zoom, 3 * zoom, 2 * zoom
    box_h = lh + 2 * pad_y
    boxes, slots, labels = [], [], []
    x, y = margin, margin
    for t, (piece, keep) in enumerate(zip(pieces, mask)):
        if not keep:
            continue
        label = fit_text(display_piece(str(piece)), f, width - 2 * margin - 2 * pad_x)
        w = int(np.ceil(f.getlength(label))) + 2 * pad_x
        if x + w > width - margin and x > margin:
            x, y = margin, y + box_h + gap
        boxes.append((x, y, x + w, y + box_h))
        slots.append(t)
        labels.append(label)
        x += w + gap
    height = (y + box_h + margin) if boxes else 2 * margin
    box_index = np.full((height, width), len(boxes), np.int32)
    ink = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(ink)
    for n, ((x0, y0, x1, y1), label) in enumerate(zip(boxes, labels)):
        box_index[y0:y1, x0:x1] = n
        draw.text((x0 + pad_x, y0 + pad_y), label, font=f, fill=255)
    return TextLayout(width=width, height=height, boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
                      slots=np.asarray(slots, np.int64), labels=tuple(labels), box_index=box_index,
                      glyphs=np.asarray(ink))


class TextPainter:
    """Recolors a fixed TextLayout per cell: box backgrounds from the colormap, labels in readable ink."""

    def __init__(self, layout: TextLayout, lut: np.ndarray, ink: np.ndarray) -> None:
        self.layout = layout
        n = len(layout.boxes)
        self.lut, self.ink = lut.astype(np.uint16), ink.astype(np.uint16)
        self.paper = np.zeros((n + 1, 3), np.uint16)
        self.pen = np.zeros((n + 1, 3), np.uint16)
        self.paper[n] = TEXT_PAPER
        self.alpha = layout.glyphs.astype(np.uint16)[..., None]  # [h, w, 1]
        self.alpha_inv = 255 - self.alpha
        self.n = n

    def draw(self, levels: np.ndarray, out: np.ndarray) -> None:
        """Paint the token boxes with `levels` [n] uint8 (one per drawn token) into `out` [height, width, 3]."""
        self.paper[: self.n] = self.lut[levels]
        self.pen[: self.n] = self.ink[levels]
        idx = self.layout.box_index
        mixed = self.paper[idx] * self.alpha_inv + self.pen[idx] * self.alpha  # <= 255 * 255: fits uint16
        mixed += 127
        np.floor_divide(mixed, 255, out=out, casting="unsafe")
