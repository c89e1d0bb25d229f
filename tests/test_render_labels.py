"""Labels in the tree: every JPEG's caption says its call, denoising step (with t), action token and layer,
drawn with the project's glyph atlas; `--composite` puts a cell's cameras and prompt into one labelled image."""

from __future__ import annotations

import numpy as np
import pytest
from bundle_support import small
from render_support import cell, decode

from pi0viz.core.colormap import colormap_lut
from pi0viz.render import RenderOptions, render_bundle
from pi0viz.render.glyphs import GlyphAtlas
from pi0viz.render.panels import CAPTION_INK, CAPTION_PAPER, Caption

FILES = ("base_0_rgb", "left_wrist_0_rgb", "text")


def _expected(text: str, atlas: GlyphAtlas) -> np.ndarray:
    """Gray levels of `text` drawn from the atlas in caption ink on caption paper."""
    a = atlas.mask(text).astype(np.float32) / 255
    return CAPTION_PAPER[0] * (1 - a) + CAPTION_INK[0] * a


def _label_lines(img: np.ndarray, atlas: GlyphAtlas, n: int) -> list[np.ndarray]:
    """The two label lines (n characters each, gray) at the bottom of a panel's caption."""
    cap = Caption("x", img.shape[1], colormap_lut(), atlas)
    top = img.shape[0] - cap.height
    gray = img.astype(np.float32).mean(-1)
    return [gray[top + y:top + y + atlas.height, cap.pad:cap.pad + n * atlas.advance] for y in cap.rows[3:5]]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    b = small(image_masks=(True, True, False), num_steps=2, num_layers=3, num_action_tokens=4)
    b.inference_step = 7
    b.layer_indices = np.array([0, 5, 17], np.int32)
    root = tmp_path_factory.mktemp("tree")
    render_bundle(b, root, RenderOptions(workers=1, quality=95, composite=True))
    return root, b


@pytest.mark.parametrize("d, a, l", [(0, 0, 0), (1, 3, 17), (1, 2, 5)])
def test_every_file_says_call_step_token_and_layer(tree, d, a, l):
    root, b = tree
    atlas = GlyphAtlas(11)
    want = [f"call 7  step {d} t={b.diffusion_times[d]:.2f}", f"action {a}  layer {l}"]
    other = [f"call 7  step {1 - d} t={b.diffusion_times[1 - d]:.2f}", f"action {(a + 1) % 4}  layer {(l + 5) % 18}"]
    for name in FILES:
        img = decode(cell(root, d, a, l, inference=7) / f"fused_attention_on_{name}.jpg")
        for line, text, wrong in zip(_label_lines(img, atlas, 24), want, other):
            ref, alt = _expected(text.ljust(24), atlas), _expected(wrong.ljust(24), atlas)
            assert np.abs(line - ref).mean() < 6, (name, text)  # the whole line: JPEG noise only
            differ = np.abs(ref - alt) > 100  # strokes of the characters in which the two labels differ
            assert differ.sum() > 20
            assert np.abs(line - ref)[differ].mean() < 40 < 100 < np.abs(line - alt)[differ].mean(), (name, text)


def test_composite_holds_the_cameras_and_the_prompt_with_their_captions(tree):
    root, _ = tree
    folder = cell(root, 1, 3, 17, inference=7)
    composite = decode(folder / "composite.jpg").astype(np.float32)
    parts = [decode(folder / f"fused_attention_on_{n}.jpg").astype(np.float32) for n in FILES]
    cam_h, cam_w = parts[0].shape[:2]
    assert composite.shape[:2] == (cam_h + parts[2].shape[0], max(2 * cam_w, parts[2].shape[1]))
    placed = [composite[:cam_h, :cam_w], composite[:cam_h, cam_w:2 * cam_w], composite[cam_h:, :parts[2].shape[1]]]
    for part, where in zip(parts, placed):
        assert np.abs(part - where).mean() < 2.5  # the same panel, two JPEG encodings
    assert np.abs(parts[0] - placed[1]).mean() > 10  # and not some other camera's
