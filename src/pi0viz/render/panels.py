"""The three kinds of pixels pi0viz draws: camera heat-map overlays, the prompt's token map and captions.

Everything that does not change between cells (upsampled images, the prompt layout and its glyphs, caption
titles and colorbars) is prepared once per render call; per cell, a painter only gathers colormap rows by
level and adds them into a preallocated panel.

Panels are "RGBX" pixels packed in uint32 ([h, w] uint32 = [h, w, 4] uint8, X unused), which libjpeg-turbo
encodes directly. Packing makes a gather move one word per pixel, and lets the camera blend be a single
uint32 addition: both terms are pre-weighted so that every channel sum stays <= 255 and never carries.
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
NUMBER_CHARS = 24  # "max 2.1e-05  mass 0.123" fits
TOP_CHARS = 8
LABEL_CHARS = 24  # "call 123  step 9 t=0.10" and "action 49  layer 17" fit in a 224 px panel


def format_prob(value: float) -> str:
    """A probability in at most 7 characters: 0.412, 0.003, 2.1e-05, 0."""
    if value >= 0.001 or value == 0:
        return f"{value:.3f}" if value else "0"
    return f"{value:.1e}"


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 -> [...] uint32 RGBX (little-endian byte order R, G, B, X)."""
    rgb = np.asarray(rgb, np.uint8)
    out = np.zeros(rgb.shape[:-1] + (4,), np.uint8)
    out[..., :3] = rgb
    return out.view("<u4")[..., 0].astype(np.uint32)


def as_rgbx(panel: np.ndarray) -> np.ndarray:
    """View a packed [h, w] uint32 panel as [h, w, 4] uint8 (what simplejpeg encodes as 'RGBX')."""
    return panel.view(np.uint8).reshape(panel.shape[0], panel.shape[1], 4)


def _blend(paper: np.ndarray, ink: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(paper * (255 - a) + ink * a) / 255, rounded; paper/ink [..., 3] uint8, alpha [...] uint8."""
    a = alpha.astype(np.uint16)[..., None]
    return ((paper.astype(np.uint16) * (255 - a) + ink.astype(np.uint16) * a + 127) // 255).astype(np.uint8)


# -- captions -----------------------------------------------------------------------------------------


LabelParts = list[tuple[int, int, np.ndarray]]  # (caption line, character column, uint32[h, n * advance] strip)


class Caption:
    """A strip under a panel, outside the image block, with the absolute scale of that panel and its cell.

        base_0_rgb                         <- title (static)
        max 0.900  mass 0.412              <- highest fused probability on the region; head-averaged mass
        0 [colorbar] 0.900                 <- the colors span 0 .. the scale top (0.900 here)
        call 3  step 9 t=0.10              <- the label: inference call, denoising step and its flow time,
        action 17  layer 12                   action token and layer, so a file out of its folder says what it is
    """

    def __init__(self, title: str, width: int, lut: np.ndarray, atlas: GlyphAtlas, zoom: int = 1) -> None:
        lh, pad = atlas.height, 2 * zoom
        self.rows = tuple(pad + k * lh for k in range(5))  # y of the five lines
        self.height = pad * 2 + 5 * lh
        self.width = width
        static = np.empty((self.height, width, 3), np.uint8)
        static[...] = CAPTION_PAPER
        title_font = font(atlas.size, mono=False)
        title_mask = text_mask(fit_text(title, title_font, width - 2 * pad), title_font)
        paint(static, title_mask, pad, self.rows[0], CAPTION_INK)
        zero = atlas.mask("0")
        paint(static, zero, pad, self.rows[2], CAPTION_INK)
        self.bar_x0 = pad + zero.shape[1] + pad
        self.bar_x1 = max(self.bar_x0 + 16, min(width - 8 * atlas.advance - pad, self.bar_x0 + width // 2))
        bar_y0, bar_y1 = self.rows[2] + lh // 4, self.rows[2] + lh - lh // 4
        ramp = np.linspace(0, 255, self.bar_x1 - self.bar_x0).round().astype(np.intp)
        static[bar_y0:bar_y1, self.bar_x0:self.bar_x1] = lut[ramp][None]
        self.static = pack_rgb(static)  # [height, width] uint32
        # Glyphs pre-blended onto the caption paper: dynamic numbers are then plain copies.
        paper = np.broadcast_to(np.asarray(CAPTION_PAPER, np.uint8), atlas.glyphs.shape + (3,))
        ink = np.broadcast_to(np.asarray(CAPTION_INK, np.uint8), atlas.glyphs.shape + (3,))
        tiles = pack_rgb(_blend(paper, ink, atlas.glyphs))  # [95, h, advance] uint32, chars 32..126
        self.tiles = np.empty((atlas.height, 128, atlas.advance), np.uint32)  # [h, ASCII code, advance]
        self.tiles[...] = tiles[ord("?") - 32][:, None, :]
        self.tiles[:, 32:127] = tiles.transpose(1, 0, 2)
        self.advance = atlas.advance
        self.pad = pad

    def _write(self, out: np.ndarray, text: str, x: int, y: int, width: int) -> None:
        # Padded to a fixed `width` in characters: the spaces repaint the previous cell's digits with paper, so
        # a reused buffer never needs the static caption copied again.
        n = min(width, max(0, (self.width - x) // self.advance))
        if n <= 0:
            return
        codes = np.frombuffer(text[:n].ljust(n).encode("ascii", "replace"), np.uint8)
        h, adv = self.tiles.shape[0], self.advance
        out[y:y + h, x:x + n * adv].reshape(h, n, adv)[...] = np.take(self.tiles, codes, axis=1)

    def strip(self, text: str, chars: int) -> np.ndarray:
        """`text` padded (or cut) to `chars` characters as glyph pixels: uint32[h, chars * advance]."""
        codes = np.frombuffer(text[:chars].ljust(chars).encode("ascii", "replace"), np.uint8)
        return np.take(self.tiles, codes, axis=1).reshape(self.tiles.shape[0], chars * self.advance)

    def place(self, part: tuple[int, int, np.ndarray], y0: int = 0) -> tuple[slice, slice, int]:
        """Where a label part goes: (rows, columns, width) in a panel whose caption starts at y0, clipped."""
        line, col, strip = part
        y, x = y0 + self.rows[line], self.pad + col * self.advance
        w = max(0, min(strip.shape[1], self.width - x))
        return slice(y, y + strip.shape[0]), slice(x, x + w), w

    def draw(self, out: np.ndarray, *, peak: float, mass: float, top: float, label: LabelParts) -> None:
        """Fill `out` [height, width] uint32 with this caption for one cell."""
        out[...] = self.static
        self.numbers(out, peak=peak, mass=mass, top=top, label=label)

    def numbers(self, out: np.ndarray, *, peak: float, mass: float, top: float, label: LabelParts) -> None:
        """Only the per-cell text (numbers and the label, see CellLabels), onto a copy of `static` in `out`."""
        self._write(out, f"max {format_prob(peak)}  mass {mass:.3f}", self.pad, self.rows[1], NUMBER_CHARS)
        self._write(out, format_prob(top), self.bar_x1 + self.pad, self.rows[2], TOP_CHARS)
        for part in label:
            rows, cols, w = self.place(part)
            out[rows, cols] = part[2][:, :w]


class CellLabels:
    """Every cell's caption label, pre-rendered once per render job: per cell three strips are copied.

        call 3  step 9 t=0.10      <- per step: the inference call, the denoising step, its flow time t
        action 17  layer 12        <- "action A" per action token, then "  layer L" per layer

    Args:
        caption: any caption of the job (all share one glyph atlas and colors).
        call: the inference call. steps, times: step index and t of every stored step (by position).
        num_actions: action tokens. layers: layer index of every stored layer (by position).
    """

    def __init__(self, caption: Caption, call: int, steps: Sequence[int], times: Sequence[float], num_actions: int,
                 layers: Sequence[int]) -> None:
        self.action_chars = len(f"action {num_actions - 1}")
        self.steps = [caption.strip(f"call {call}  step {s} t={t:.2f}", LABEL_CHARS) for s, t in zip(steps, times)]
        self.actions = [caption.strip(f"action {a}", self.action_chars) for a in range(num_actions)]
        self.layers = [caption.strip(f"  layer {l}", LABEL_CHARS - self.action_chars) for l in layers]

    def parts(self, d: int, l: int, a: int) -> LabelParts:
        """Label of the cell at step position d, layer position l, action token a."""
        return [(3, 0, self.steps[d]), (4, 0, self.actions[a]), (4, self.action_chars, self.layers[l])]


# -- cameras ------------------------------------------------------------------------------------------


class CameraPainter:
    """Heat map of one camera's patches blended over its model-input image.

    With `zoom` z and an h x w image on a rows x cols patch grid, patch (r, c) covers exactly the pixel block
    [r * ph, (r + 1) * ph) x [c * pw, (c + 1) * pw) with ph = h / rows * z, pw = w / cols * z (pi0: 14 z px).
    "nearest" fills that block with one color; "bilinear" interpolates the levels between patch centers
    (smoother, but a hot patch then bleeds half a patch into its neighbors).
    Blend: pixel = floor(image * (1 - alpha)) + floor(color * alpha), per channel (alpha in 1/256 steps).
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
        a = int(round(alpha * 256))
        big = image.repeat(zoom, axis=0).repeat(zoom, axis=1)  # [h z, w z, 3]
        base = (big.astype(np.uint16) * (256 - a)) >> 8  # floor: the two terms sum to <= 255 per channel
        self.base = pack_rgb(base.astype(np.uint8)).reshape(rows, self.block[0], self.shape[1])  # [rows, ph, w z]
        self.lut = pack_rgb(((lut.astype(np.uint16) * a) >> 8).astype(np.uint8))  # [256] uint32
        if upsample == "bilinear":
            self.rows_w = _bilinear_weights(rows, self.shape[0])  # [h z, rows]
            self.cols_w = _bilinear_weights(cols, self.shape[1])  # [w z, cols]
        elif upsample != "nearest":
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")

    def draw(self, levels: np.ndarray, out: np.ndarray) -> None:
        """Paint `levels` [rows * cols] uint8 (raster order) into `out` [h z, w z] uint32."""
        rows, cols = self.grid
        if self.upsample == "nearest":
            colors = self.lut[levels].reshape(rows, cols)
            row_colors = np.repeat(colors, self.block[1], axis=1)  # [rows, w z]: one color per patch block
            np.add(self.base, row_colors[:, None, :], out=out.reshape(rows, self.block[0], self.shape[1]))
        else:
            smooth = self.rows_w @ levels.reshape(rows, cols).astype(np.float32) @ self.cols_w.T  # [h z, w z]
            index = (smooth + 0.5).astype(np.uint8)
            np.add(self.base.reshape(self.shape), self.lut[index], out=out)


class CameraStack:
    """All cameras of a cell at once (nearest upsampling): one gather, one repeat, one uint32 addition and one
    caption copy for every camera together, instead of a few numpy calls per camera."""

    def __init__(self, painters: Sequence[CameraPainter], captions: Sequence[Caption]) -> None:
        self.base = np.stack([p.base for p in painters])  # [C, rows, ph, w z]
        self.lut = painters[0].lut
        self.grid, self.block, self.shape = painters[0].grid, painters[0].block, painters[0].shape
        self.static = np.stack([c.static for c in captions])  # [C, caption height, w z]
        self.buffer = np.empty((len(painters), self.shape[0] + captions[0].height, self.shape[1]), np.uint32)
        cap = captions[0]  # all camera captions share width, font and geometry
        self.tiles, self.advance = cap.tiles, cap.advance
        y0 = self.shape[0]
        self.line = (y0 + cap.rows[1], cap.pad, min(NUMBER_CHARS, (cap.width - cap.pad) // cap.advance))  # y, x, chars
        self.top = (y0 + cap.rows[2], cap.bar_x1 + cap.pad,
                    min(TOP_CHARS, (cap.width - cap.bar_x1 - cap.pad) // cap.advance))
        self.caption = cap
        self.buffer[:, self.shape[0]:] = self.static  # once: per cell only the fixed-width numbers change

    def draw(self, levels: np.ndarray) -> np.ndarray:
        """Paint `levels` [C, rows * cols] uint8 into the panels; returns them, [C, h z + caption, w z] uint32
        (captions hold the previous cell's numbers until `numbers`)."""
        C, (rows, cols), (ph, pw), (h, w) = len(self.base), self.grid, self.block, self.shape
        colors = self.lut[levels].reshape(C, rows, cols)
        row_colors = np.repeat(colors, pw, axis=2)  # [C, rows, w z]
        np.add(self.base, row_colors[:, :, None, :], out=self.buffer[:, :h].reshape(C, rows, ph, w))
        return self.buffer

    def numbers(self, peaks: Sequence[float], masses: Sequence[float], tops: Sequence[float],
                label: LabelParts) -> None:
        """Write every camera's caption numbers (one gather per line) and the cell's label (see CellLabels)."""
        self._write([f"max {format_prob(p)}  mass {m:.3f}" for p, m in zip(peaks, masses)], *self.line)
        self._write([format_prob(t) for t in tops], *self.top)
        for part in label:  # the same strips under every camera
            rows, cols, w = self.caption.place(part, self.shape[0])
            self.buffer[:, rows, cols] = part[2][:, :w]

    def _write(self, texts: Sequence[str], y: int, x: int, n: int) -> None:
        if n <= 0:
            return
        C, h, adv = len(texts), self.tiles.shape[0], self.advance
        joined = "".join(t[:n].ljust(n) for t in texts)  # spaces are paper: they overwrite with the background
        codes = np.frombuffer(joined.encode("ascii", "replace"), np.uint8).reshape(C, n)
        glyphs = np.take(self.tiles, codes, axis=1)  # [h, C, n, advance]
        self.buffer[:, y:y + h, x:x + n * adv].reshape(C, h, n, adv)[...] = glyphs.transpose(1, 0, 2, 3)


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
        width, height: size of the token area in pixels (the caption goes below it, from y = height).
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
    """Recolors a fixed TextLayout per cell: box backgrounds from the colormap, labels in readable ink.

    Within one line of boxes every pixel row has the same box pattern, so the map is a handful of colored
    rows copied down; then only the pixels that carry ink (glyph strokes and their antialiased edges) are
    set, from a [level, alpha] table of paper/ink blends built once.
    """

    def __init__(self, layout: TextLayout, lut: np.ndarray, ink: np.ndarray) -> None:
        self.layout = layout
        self.n = n = len(layout.boxes)
        patterns, row_pattern = np.unique(layout.box_index, axis=0, return_inverse=True)
        self.patterns = patterns  # [P, width] box index per pixel, one row per distinct pixel-row pattern
        self.row_pattern = row_pattern.reshape(-1).astype(np.intp)  # [height]
        self.lut32 = pack_rgb(lut)
        self.table = np.empty(n + 1, np.uint32)
        self.table[n] = pack_rgb(np.asarray(TEXT_PAPER, np.uint8))
        alpha = np.arange(256, dtype=np.uint8)
        paper = np.broadcast_to(lut[:, None, :], (256, 256, 3))
        pen = np.broadcast_to(ink[:, None, :], (256, 256, 3))
        alphas = np.broadcast_to(alpha[None, :], (256, 256))
        self.blends = pack_rgb(_blend(paper, pen, alphas)).reshape(-1)  # index: level * 256 + alpha
        flat_alpha = layout.glyphs.reshape(-1)
        self.ink_at = np.flatnonzero(flat_alpha)  # pixels with ink (all inside boxes)
        self.ink_box = layout.box_index.reshape(-1)[self.ink_at]
        self.ink_alpha = flat_alpha[self.ink_at].astype(np.intp)
        if n and (self.ink_box >= n).any():
            raise ValueError("a label's ink spills out of its box")

    def draw(self, levels: np.ndarray, out: np.ndarray) -> None:
        """Paint the token boxes with `levels` [n] uint8 (one per drawn token) into `out` [height, width] uint32."""
        self.table[: self.n] = self.lut32[levels]
        rows = self.table[self.patterns]  # [P, width]
        np.take(rows, self.row_pattern, axis=0, out=out)
        at = levels.astype(np.intp)[self.ink_box] * 256 + self.ink_alpha
        out.reshape(-1)[self.ink_at] = self.blends[at]
