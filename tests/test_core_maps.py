"""pi0viz.core.maps: the one camera rule, the drawn prompt pieces, and fused maps of full and reduced captures."""

from __future__ import annotations

import numpy as np
import pytest
from bundle_support import small

from pi0viz.core import fusion
from pi0viz.core.maps import action_key_maps, drawn_cameras, drawn_image_masks, fused_map_steps, fused_maps
from pi0viz.errors import FusionError

BASE, LEFT, RIGHT = "base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"


def three_kinds(**kw):
    """Base live, left wrist masked (mask False), right wrist silent (mask True, exactly 0 attention): LIBERO's
    padded right wrist as openpi leaves it when nobody passes the mask."""
    b = small(image_masks=(True, False, False), **kw)
    b.image_masks[:, 2] = True
    return b


def test_the_camera_rule_draws_only_unmasked_cameras_that_receive_attention() -> None:
    b = three_kinds()
    drawn = drawn_cameras(b)
    assert drawn.cameras == [0] and drawn.camera_names == [BASE]
    assert drawn.masked == [1] and drawn.silent == [2]
    assert drawn.image_masks[0].tolist() == [True, False, False]
    assert b.image_masks[0].tolist() == [True, False, True]  # the bundle itself is left alone
    notes = drawn.notes()
    assert len(notes) == 2 and LEFT in notes[0] and "masked" in notes[0] and RIGHT in notes[1]
    assert drawn.notes(among=[0]) == []  # notes only for the cameras asked about
    base = b.layout.camera_region(0)
    text = b.layout.text_region.start + np.arange(12)
    np.testing.assert_array_equal(drawn.keys, np.concatenate([np.arange(base.start, base.stop), text]))
    assert drawn.regions == [(BASE, 0, 256), ("text", 256, 268)]
    masks, notes2 = drawn_image_masks(b)
    np.testing.assert_array_equal(masks, drawn.image_masks)
    assert notes2 == notes


def test_one_attended_key_anywhere_makes_a_camera_drawn() -> None:
    b = three_kinds()
    right = b.layout.camera_region(2)
    actions = b.layout.action_queries()
    b.attention[1, 2, 0, 0, 5, actions.start + 3, right.start + 40] = 1e-6  # one head, one row, one key, last step
    drawn = drawn_cameras(b)
    assert drawn.cameras == [0, 2] and drawn.silent == []
    # ...while attention from the state query alone does not count: only action rows are drawn.
    b = three_kinds()
    b.attention[:, :, 0, 0, :, 0, right.start + 40] = 0.01
    assert drawn_cameras(b).silent == [2]


def test_logits_captures_find_silent_cameras_by_the_mask_value() -> None:
    b = three_kinds()
    with np.errstate(divide="ignore"):
        logits = np.log(b.attention)
    logits[np.isneginf(logits)] = -2.3819763e38  # openpi's mask value
    b.attention = logits.astype(np.float32)
    b.attention_kind = "logits"
    drawn = drawn_cameras(b)
    assert drawn.cameras == [0] and drawn.silent == [2]
    probs = fused_maps(three_kinds())
    np.testing.assert_allclose(fused_maps(b).fused, probs.fused, rtol=1e-5, atol=1e-7)


def test_the_rule_is_per_batch_element() -> None:
    b = small(batch=2, image_masks=(True, True, False))
    b.image_masks[:, 2] = True
    right = b.layout.camera_region(2)
    b.attention[:, :, 0, :, :, b.layout.action_queries(), right.start + 1] += 1e-5  # element 0 looks at it
    assert drawn_cameras(b, 0).cameras == [0, 1, 2] and drawn_cameras(b, 1).cameras == [0, 1]
    with pytest.raises(FusionError, match="batch_index 2 out of range"):
        drawn_cameras(b, 2)


def test_prompt_pieces_drawn_are_the_non_pad_tokens_in_order() -> None:
    b = small(num_valid_text=5)
    drawn = drawn_cameras(b)
    assert drawn.text_pieces == ["<bos>", "▁pick", "▁up", "▁the", "\n"]
    np.testing.assert_array_equal(drawn.text_slots, np.arange(5))
    assert drawn.regions[-1] == ("text", 3 * 256, 3 * 256 + 5)
    # A pad in the middle of the prompt (its key masked to 0) is skipped, the order kept.
    text = b.layout.text_region.start
    b.token_mask[:, 2] = False
    b.token_pieces[:, 2] = ""
    b.attention[..., text + 2] = 0
    b.attention /= b.attention.sum(-1, keepdims=True)
    drawn = drawn_cameras(b)
    assert drawn.text_pieces == ["<bos>", "▁pick", "▁the", "\n"]
    np.testing.assert_array_equal(drawn.text_slots, [0, 1, 3, 4])
    np.testing.assert_array_equal(drawn.keys[-4:], text + np.array([0, 1, 3, 4]))
    m = fused_maps(b)
    assert m.fused.shape[-1] == 3 * 256 + 4 and m.text_pieces == drawn.text_pieces


def test_fused_maps_are_the_fusion_math_on_the_drawn_masks() -> None:
    b = three_kinds(num_steps=3)
    m = fused_maps(b, keep_heads=True)
    ref = fusion.fuse_call(b.attention, b.layout, m.drawn.image_masks, b.token_mask, keep_heads=True)
    np.testing.assert_array_equal(m.fused, ref.fused)
    np.testing.assert_array_equal(m.heads, ref.heads)
    np.testing.assert_array_equal(m.region_mass, ref.region_mass)
    assert m.regions == [(BASE, 0, 256), ("text", 256, 268)] and m.camera_names == [BASE]
    # The region masses of the drawn regions are those of the bundle's own masks (a silent camera holds 0).
    full = fusion.fuse_call(b.attention, b.layout, b.image_masks, b.token_mask)
    np.testing.assert_allclose(m.region_mass, full.region_mass[..., [0, 2]], atol=1e-7)
    np.testing.assert_array_equal(m.peaks[..., 0], m.fused[..., :256].max(-1))
    # Selected steps and layers: the same numbers as the whole call, sliced; labels follow the bundle's.
    b.step_indices = np.array([0, 4, 9], np.int32)
    part = fused_maps(b, step_pos=[2, 0], layer_pos=[1])
    np.testing.assert_array_equal(part.fused, m.fused[[2, 0]][:, [1]])
    assert part.step_labels.tolist() == [9, 0] and part.layer_labels.tolist() == [1]
    np.testing.assert_array_equal(part.diffusion_times, b.diffusion_times[[2, 0]])
    with pytest.raises(FusionError, match="step positions"):
        fused_maps(b, step_pos=[3])


def test_streaming_and_every_key_maps_agree_with_fused_maps() -> None:
    b = three_kinds()
    m = fused_maps(b, keep_heads=True)
    stream = fused_map_steps(b)
    assert stream.drawn.cameras == m.cameras
    steps = list(stream)
    assert len(steps) == 2
    for d, step in enumerate(steps):
        np.testing.assert_array_equal(step.fused, m.fused[d])
        np.testing.assert_array_equal(step.heads.transpose(0, 2, 1, 3), m.heads[d])
    k = action_key_maps(b)
    np.testing.assert_array_equal(k.peak[..., m.keys], m.fused)  # the renderer's fused map, exactly
    np.testing.assert_allclose(k.mean.sum(-1), 1.0, atol=1e-5)  # head-mean rows are distributions
    assert not k.valid[b.layout.camera_region(2).slice].any()  # undrawn cameras are not valid keys
    assert k.valid[b.layout.camera_region(0).slice].all()


def test_heads_fused_captures_fuse_to_the_same_maxima() -> None:
    full = three_kinds()
    reduced = three_kinds()
    reduced.attention = full.attention.max(axis=4, keepdims=True)  # CaptureOptions(fuse_heads=True)
    reduced.attention_heads = "max"
    a, r = fused_maps(full), fused_maps(reduced, keep_heads=True)
    assert r.heads_fused and r.heads.shape[3] == 1 and r.cameras == a.cameras == [0]
    np.testing.assert_array_equal(r.fused, a.fused)
    # The per-head masses are gone: the fused map's sum, an upper bound of the head-mean mass.
    np.testing.assert_allclose(r.region_mass[..., 0], r.fused[..., :256].sum(-1), rtol=1e-5)
    assert (r.region_mass >= a.region_mass - 1e-6).all()
    # Rows of maxima are not distributions: the full check refuses them unless the bundle says "max".
    reduced.attention_heads = "all"
    with pytest.raises(FusionError, match="do not sum to 1"):
        fused_maps(reduced)
