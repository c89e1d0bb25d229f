"""The pictures say what the attention says: hot spots land in the right patch block and text box."""

from __future__ import annotations

import numpy as np
import pytest
from render_support import (
    GRID,
    PATCH_PX,
    block_levels,
    cell,
    decode,
    hot_bundle,
    nearest_level,
)

from pi0viz.core.fusion import ColorScale
from pi0viz.core.synthetic import synthetic_bundle
from pi0viz.render import RenderOptions, render_bundle
from pi0viz.render.engine import RenderJob
from pi0viz.render.panels import as_rgbx, display_piece

ONE_CELL = dict(steps="3", action_tokens="17", layers="5", workers=1)


@pytest.fixture(scope="module")
def hot_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("hot")
    bundle = hot_bundle()
    render_bundle(bundle, out, RenderOptions(alpha=1.0, **ONE_CELL))
    job = RenderJob(bundle, str(out), 0, RenderOptions(alpha=1.0, **ONE_CELL))
    return out, job


def test_hot_patch_is_hottest_exactly_in_its_block(hot_tree):
    out, _ = hot_tree
    img = decode(cell(out, 3, 17, 5) / "fused_attention_on_base_0_rgb.jpg")
    assert img.shape[:2][1] == GRID * PATCH_PX and img.shape[0] > GRID * PATCH_PX  # caption below the image block
    levels = block_levels(img)
    assert np.unravel_index(levels.argmax(), levels.shape) == (4, 11)
    assert levels[4, 11] >= 250  # the top of the scale: max over heads = 0.9 = the cell's max
    others = np.delete(levels.reshape(-1), 4 * GRID + 11)
    assert others.max() <= 10  # 0.9 vs ~1/800 elsewhere: everything else is cold
    # Exactly the block: pixels just outside it (other patches) are cold, pixels just inside are hot.
    y0, x0 = 4 * PATCH_PX, 11 * PATCH_PX
    assert nearest_level(img[y0 + 3, x0 + 3]) >= 240 and nearest_level(img[y0 + 10, x0 + 10]) >= 240
    assert nearest_level(img[y0 - 3, x0 + 7]) <= 20 and nearest_level(img[y0 + 7, x0 + PATCH_PX + 3]) <= 20


def test_token_7_box_is_the_hottest_text_box(hot_tree):
    out, job = hot_tree
    img = decode(cell(out, 3, 17, 5) / "fused_attention_on_text.jpg")
    layout = job.text_layout
    assert list(layout.slots[:8]) == list(range(8))
    box_levels = []
    for x0, y0, x1, y1 in layout.boxes:
        # The box's 2 px background rim above the glyphs: no ink there.
        rim = img[y0 + 1, x0 + 2:x1 - 2]
        box_levels.append(int(np.median(nearest_level(rim))))
    hottest = int(np.argmax(box_levels))
    assert layout.slots[hottest] == 7
    # Shared cell scale: top = 0.9 (the camera hot spot), so token 7 at 0.5 sits at ~0.5 * 255.
    assert 110 <= box_levels[hottest] <= 145
    assert sorted(box_levels)[-2] <= 10


def test_camera_nobody_attends_stays_cold_under_shared_scale(hot_tree):
    out, _ = hot_tree
    img = decode(cell(out, 3, 17, 5) / "fused_attention_on_left_wrist_0_rgb.jpg")
    assert block_levels(img).max() <= 10


def test_region_scale_stretches_each_region(tmp_path):
    render_bundle(hot_bundle(), tmp_path, RenderOptions(alpha=1.0, scale=ColorScale("region"), **ONE_CELL))
    img = decode(cell(tmp_path, 3, 17, 5) / "fused_attention_on_left_wrist_0_rgb.jpg")
    assert block_levels(img).max() >= 200  # its own max is its own top


def test_default_blend_is_brightest_at_hot_patch(tmp_path):
    # Default alpha over the real image: the hot block is the brightest block of the map (inferno's top is
    # pale yellow, its bottom black).
    render_bundle(hot_bundle(), tmp_path, RenderOptions(**ONE_CELL))
    img = decode(cell(tmp_path, 3, 17, 5) / "fused_attention_on_base_0_rgb.jpg").astype(np.float32)
    blocks = img[: GRID * PATCH_PX, : GRID * PATCH_PX].reshape(GRID, PATCH_PX, GRID, PATCH_PX, 3).mean(axis=(1, 3, 4))
    assert np.unravel_index(blocks.argmax(), blocks.shape) == (4, 11)


def test_zoom_and_bilinear(tmp_path):
    render_bundle(hot_bundle(), tmp_path / "z2", RenderOptions(alpha=1.0, zoom=2, **ONE_CELL))
    img = decode(cell(tmp_path / "z2", 3, 17, 5) / "fused_attention_on_base_0_rgb.jpg")
    assert img.shape[1] == 2 * GRID * PATCH_PX
    levels = block_levels(img, zoom=2)
    assert np.unravel_index(levels.argmax(), levels.shape) == (4, 11) and levels[4, 11] >= 250
    render_bundle(hot_bundle(), tmp_path / "bl", RenderOptions(alpha=1.0, upsample="bilinear", **ONE_CELL))
    img = decode(cell(tmp_path / "bl", 3, 17, 5) / "fused_attention_on_base_0_rgb.jpg")
    lv = nearest_level(img[: GRID * PATCH_PX, : GRID * PATCH_PX])
    y, x = np.unravel_index(lv.argmax(), lv.shape)
    assert y // PATCH_PX == 4 and x // PATCH_PX == 11  # the peak stays at the patch center
    assert 20 < nearest_level(img[4 * PATCH_PX + 7, 11 * PATCH_PX - 2]) < 230  # but it bleeds into neighbors


def test_pads_are_not_drawn_and_bos_newline_are_visible():
    b = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2, num_valid_text=5)
    b.token_pieces[0, 5:] = "PAD"  # pads with a visible piece must still not be drawn
    job = RenderJob(b, "unused", 0, RenderOptions(workers=1))
    layout = job.text_layout
    assert list(layout.slots) == [0, 1, 2, 3, 4]
    assert "PAD" not in layout.labels
    assert layout.labels[0] == "<bos>" and layout.labels[-1] == "↵" == display_piece("\n")
    # Pixels outside the boxes are the paper color in every cell; ink lies only inside boxes.
    panel = as_rgbx(next(p for i, p in enumerate(job.panels(0, 0, 0)) if i == len(job.painters) - 1))
    outside = layout.box_index == len(layout.boxes)
    assert (panel[: layout.height][outside][:, :3] == 255).all()


def test_text_wraps_to_width_and_keeps_order():
    pieces = ["<bos>"] + [f"▁word{i}" for i in range(60)] + ["\n"]
    from pi0viz.render.panels import layout_prompt

    layout = layout_prompt(pieces, [True] * len(pieces), width=448)
    assert len(layout.boxes) == len(pieces)
    assert (layout.boxes[:, 2] <= 448).all() and len(set(layout.boxes[:, 1])) > 3  # several lines
    order = layout.boxes[:, 1] * 10_000 + layout.boxes[:, 0]
    assert (np.diff(order) > 0).all()  # reading order = prompt order


def test_logits_render_the_same_maps_as_probs(tmp_path):
    probs = hot_bundle(steps=4, layers=6, actions=18)
    valid = probs.attention > 0
    rng = np.random.default_rng(1)
    logits_bundle = hot_bundle(steps=4, layers=6, actions=18)
    scores = np.log(np.where(valid, probs.attention, 1.0)) + 3.0  # any per-row shift: softmax ignores it
    scores = np.where(valid, scores, rng.normal(5.0, 1.0, scores.shape))  # masked keys hold junk scores
    logits_bundle.attention = scores.astype(np.float32)
    logits_bundle.attention_kind = "logits"
    opts = RenderOptions(**ONE_CELL)
    a = RenderJob(probs, str(tmp_path / "p"), 0, opts)
    b = RenderJob(logits_bundle, str(tmp_path / "l"), 0, opts)
    assert np.abs(a.levels.astype(int) - b.levels.astype(int)).max() <= 1
    np.testing.assert_allclose(a.peaks, b.peaks, rtol=1e-4, atol=1e-6)
    render_bundle(probs, tmp_path / "p", opts)
    render_bundle(logits_bundle, tmp_path / "l", opts)
    for name in ("fused_attention_on_base_0_rgb.jpg", "fused_attention_on_text.jpg"):
        pa, pb = decode(cell(tmp_path / "p", 3, 17, 5) / name), decode(cell(tmp_path / "l", 3, 17, 5) / name)
        assert np.abs(pa.astype(int) - pb.astype(int)).mean() < 0.5


def test_probs_that_are_really_logits_are_refused(tmp_path):
    b = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2)
    b.attention = (b.attention * 50).astype(np.float32)  # not probabilities any more
    from pi0viz.render.files import RenderError

    with pytest.raises(RenderError, match="attention_kind='logits'"):
        render_bundle(b, tmp_path, RenderOptions(workers=1))
    b = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2)
    b.attention[..., :5] += 0.01  # rows no longer sum to 1
    with pytest.raises(RenderError, match="do not sum to 1"):
        render_bundle(b, tmp_path, RenderOptions(workers=1))


def test_per_head_views(tmp_path):
    render_bundle(hot_bundle(), tmp_path, RenderOptions(alpha=1.0, per_head=True, **ONE_CELL))
    folder = cell(tmp_path, 3, 17, 5)
    montage = decode(folder / "per_head_attention_on_base_0_rgb.jpg")
    w = GRID * PATCH_PX
    assert montage.shape[1] == 9 * w  # fused, then heads 0..7
    hot_panels = [i for i in range(9) if block_levels(montage[:, i * w:(i + 1) * w])[4, 11] >= 240]
    assert hot_panels == [0, 7]  # the fused map and head 6
    text = decode(folder / "per_head_attention_on_text.jpg")
    assert text.shape[0] == 9 * decode(folder / "fused_attention_on_text.jpg").shape[0]


def test_camera_selection_with_a_gap_draws_the_right_patches(tmp_path):
    b = hot_bundle()
    right = b.layout.camera_region(2).start + 13 * GRID + 2
    from pi0viz.core.synthetic import place_hot_key

    place_hot_key(b, step=3, layer=5, action_token=17, head=1, key=right, mass=0.8)
    render_bundle(b, tmp_path, RenderOptions(alpha=1.0, cameras="base_0_rgb,right_wrist_0_rgb", **ONE_CELL))
    folder = cell(tmp_path, 3, 17, 5)
    assert sorted(p.name for p in folder.iterdir()) == [
        "fused_attention_on_base_0_rgb.jpg", "fused_attention_on_right_wrist_0_rgb.jpg", "fused_attention_on_text.jpg"]
    lv = block_levels(decode(folder / "fused_attention_on_right_wrist_0_rgb.jpg"))
    assert np.unravel_index(lv.argmax(), lv.shape) == (13, 2) and 215 <= lv[13, 2] <= 235  # 0.8 / 0.9 of the top
    lv = block_levels(decode(folder / "fused_attention_on_base_0_rgb.jpg"))
    assert np.unravel_index(lv.argmax(), lv.shape) == (4, 11) and lv[4, 11] >= 250
