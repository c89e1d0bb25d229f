"""Pixels of one episode video frame: cameras with the current call's heat map, the prompt strip, a label.

    +---------------------+---------------------+
    | base_0_rgb frame    | left_wrist frame    |   each: the rollout frame blended with the call's map
    | + heat map          | + heat map          |
    | name  mass  max     | name  mass  max     |   caption
    +---------------------+---------------------+
    | <bos> pick  up  the  black  bowl ...      |   prompt tokens colored on the same scale
    +-------------------------------------------+
    | control step 17  call 3  step 9 (t=0.10)  layers 0-17  action tokens 0-49  top 0.031 |
    +-------------------------------------------+

Patch (r, c) of a rows x cols grid covers the frame's pixel rows [r H / rows, (r + 1) H / rows) (and likewise
columns), which is exact for frames in the model-input view (224 x 224: 14 x 14 px per patch).
"""

from __future__ import annotations

import numpy as np

from pi0viz.core.colormap import readable_ink
from pi0viz.episode.aggregate import CallMaps
from pi0viz.render.glyphs import fit_text, font, line_height, paint, text_mask
from pi0viz.render.panels import TextPainter, as_rgbx, layout_prompt

INK = (20, 20, 20)
PAPER = 255
MACRO_BLOCK = 16  # H.264 codes 16 x 16 blocks: frame sizes are padded to multiples of it


def linear_levels(values: np.ndarray, top: float) -> np.ndarray:
    """uint8 colormap levels of `values` (any shape) on a linear scale 0 .. top (above top saturates)."""
    if top <= 0:
        return np.zeros(values.shape, np.uint8)
    return (np.clip(values / top, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def overlay(frame: np.ndarray, levels: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """Blend a patch heat map over a frame.

    Args:
        frame: uint8[h, w, 3]. levels: uint8[rows, cols] colormap levels. lut: uint8[256, 3].
        alpha: heat-map weight, 0..1.

    Returns:
        uint8[h, w, 3]: round(frame * (1 - alpha) + lut[level of the pixel's patch] * alpha).
    """
    H, W = frame.shape[:2]
    rows, cols = levels.shape
    heat = lut[levels][(np.arange(H) * rows) // H][:, (np.arange(W) * cols) // W]  # [h, w, 3] nearest patches
    out = frame.astype(np.float32) * (1.0 - alpha) + heat.astype(np.float32) * alpha
    return (out + 0.5).astype(np.uint8)


def _padded(n: int) -> int:
    return -(-n // MACRO_BLOCK) * MACRO_BLOCK


class FrameComposer:
    """Lays out and draws episode frames of a fixed size (a video cannot change size).

    Args:
        camera_names: the cameras drawn, left to right (a frame column each).
        frame_size: (h, w) of one camera frame.
        prompts: every distinct (pieces) prompt of the episode's calls, to size the prompt strip.
        lut: uint8[256, 3] colormap. alpha: heat-map weight.
    """

    def __init__(self, camera_names: list[str], frame_size: tuple[int, int], prompts: list[list[str]],
                 lut: np.ndarray, alpha: float = 0.6) -> None:
        self.camera_names = list(camera_names)
        self.lut, self.alpha = lut, alpha
        self.frame_h, self.frame_w = frame_size
        self.width = max(1, len(camera_names)) * self.frame_w
        self.font = font(12)
        self.line = line_height(self.font)
        self.caption_h = self.line + 4
        self._prompts = {tuple(p): TextPainter(layout_prompt(p, [True] * len(p), width=self.width), lut,
                                               readable_ink(lut)) for p in prompts}
        self.prompt_h = max([p.layout.height for p in self._prompts.values()], default=0)
        self.label_h = 2 * self.line + 6
        self.height = self.frame_h + self.caption_h + self.prompt_h + self.label_h
        self.shape = (_padded(self.height), _padded(self.width), 3)

    @property
    def prompt_origin(self) -> int:
        """y of the prompt strip's top row (cameras and their captions are above it)."""
        return self.frame_h + self.caption_h

    def draw(self, images: dict[str, np.ndarray], maps: CallMaps | None, top: float, label: str) -> np.ndarray:
        """One video frame.

        Args:
            images: camera name -> uint8[h, w, 3] frame at this control step.
            maps: the current call's aggregate, or None (no attention for this step: plain frames).
            top: top of the color scale (maps' own top, or the episode's).
            label: the text of the bottom lines (wrapped in two lines at " | ").

        Returns:
            uint8[h', w', 3] with h', w' the padded frame size.
        """
        out = np.full(self.shape, PAPER, np.uint8)
        y_cap = self.frame_h
        for i, name in enumerate(self.camera_names):
            x = i * self.frame_w
            frame = images.get(name)
            if frame is None:
                continue
            frame = frame[: self.frame_h, : self.frame_w]
            caption = name
            if maps is not None and name in maps.camera_names:
                c = maps.camera_names.index(name)
                frame = overlay(frame, linear_levels(maps.cameras[c], top), self.lut, self.alpha)
                caption = f"{name}  mass {maps.mass[c]:.3f}"
            out[: frame.shape[0], x:x + frame.shape[1]] = frame
            self._text(out, caption, x + 3, y_cap + 2, self.frame_w - 6)
        y = self.prompt_origin
        if maps is not None:
            painter = self._prompts.get(tuple(maps.prompt_pieces))
            if painter is not None:
                buf = np.empty((painter.layout.height, painter.layout.width), np.uint32)
                painter.draw(linear_levels(maps.prompt, top), buf)
                out[y:y + buf.shape[0], : buf.shape[1]] = as_rgbx(buf)[..., :3]
        y += self.prompt_h
        first, _, second = label.partition(" | ")
        self._text(out, first, 3, y + 2, self.width - 6)
        self._text(out, second, 3, y + 2 + self.line, self.width - 6)
        return out

    def _text(self, out: np.ndarray, text: str, x: int, y: int, width: int) -> None:
        if text:
            paint(out, text_mask(fit_text(text, self.font, width), self.font), x, y, INK)
