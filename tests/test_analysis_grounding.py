"""Grounding metrics and the mask transform against constructed ground truth (maps and masks with known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bundle_support import small

from pi0viz.analysis.grounding import (
    CAMERA_METRICS,
    call_grounding,
    camera_metrics,
    grounding_summary,
    row_percentile,
    to_csv,
)
from pi0viz.analysis.maps import action_maps
from pi0viz.analysis.masks import (
    CallMasks,
    load_masks,
    masks_for_bundle,
    masks_path,
    patch_coverage,
    save_masks,
)
from pi0viz.errors import AnalysisError

P = 256
OBJECT = np.arange(26)  # 26 patches (about 10 % of 256) fully covered by the object


def object_mask() -> np.ndarray:
    m = np.zeros(P, np.float32)
    m[OBJECT] = 1.0
    return m


def two_level_row() -> np.ndarray:
    """0.52 of the camera's attention spread evenly on the object, 0.48 evenly on the other 230 patches."""
    x = np.full(P, 0.48 / 230, np.float32)
    x[OBJECT] = 0.02
    return x


def test_mass_lift_pointing_and_entropy_of_a_two_level_map() -> None:
    m = camera_metrics(two_level_row()[None] * 0.5, object_mask())  # the camera holds half of the row
    assert m["mass"][0] == pytest.approx(0.26, abs=1e-6)  # absolute share of the row
    assert m["mass_in_camera"][0] == pytest.approx(0.52, abs=1e-6)
    assert m["lift"][0] == pytest.approx(0.52 / (26 / 256), rel=1e-5)  # 5.12
    assert m["pointing_hit"][0] == 1 and m["pointing_cover"][0] == 1
    h = -(26 * 0.02 * math.log(0.02) + 0.48 * math.log(0.48 / 230)) / math.log(256)
    assert m["entropy"][0] == pytest.approx(h, abs=1e-5)


def test_iou_top_sets_follow_the_percentile_with_ties() -> None:
    m = camera_metrics(two_level_row()[None], object_mask())
    assert m["iou10"][0] == pytest.approx(1.0)  # 90th percentile falls between the levels: exactly the object
    # 75th and 50th percentiles land on the lower level; ties are kept (>=), so the top set is every patch.
    assert m["iou25"][0] == pytest.approx(26 / 256)
    assert m["iou50"][0] == pytest.approx(26 / 256)


def test_iou_with_distinct_values_has_exact_top_set_sizes() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(P).astype(np.float32)  # < 1 off the object
    x[OBJECT] += 1.0  # the object holds the 26 largest values
    m = camera_metrics(x[None], object_mask())
    # top 10 %: virtual index 229.5 -> the 26 largest; 25 %: 191.25 -> 64 largest; 50 %: 127.5 -> 128 largest
    assert m["iou10"][0] == pytest.approx(1.0)
    assert m["iou25"][0] == pytest.approx(26 / 64)
    assert m["iou50"][0] == pytest.approx(26 / 128)


def test_partial_coverage_counts_as_area() -> None:
    cov = np.zeros(P, np.float32)
    cov[[5, 6]] = 0.5  # one patch's worth of object spread over two half-covered patches
    x = np.full(P, 1e-3, np.float32)
    x[5] = 0.9
    m = camera_metrics(x[None], cov)
    assert m["pointing_hit"][0] == 1 and m["pointing_cover"][0] == 0.5
    # The 90th percentile of 255 equal values and one large one is the common value: all 256 patches tie into
    # the top set, which then holds the whole object area (1.0): IoU = 1 / (256 + 1 - 1).
    assert m["iou10"][0] == pytest.approx(1 / 256)
    total = x.sum()
    assert m["mass_in_camera"][0] == pytest.approx((0.9 * 0.5 + 1e-3 * 0.5) / total, rel=1e-5)
    assert m["lift"][0] == pytest.approx(m["mass_in_camera"][0] / (1 / 256), rel=1e-5)


def test_pointing_miss_uniform_entropy_and_empty_mask() -> None:
    x = np.full((2, P), 1 / P, np.float32)
    x[1, 200] = 0.5  # hot patch off the object
    m = camera_metrics(x, object_mask())
    assert m["entropy"][0] == pytest.approx(1.0, abs=1e-6)
    assert m["pointing_hit"][1] == 0 and m["pointing_cover"][1] == 0
    one_hot = np.zeros((1, P), np.float32)
    one_hot[0, 3] = 1
    assert camera_metrics(one_hot, object_mask())["entropy"][0] == pytest.approx(0.0, abs=1e-6)
    empty = camera_metrics(x, np.zeros(P, np.float32))
    assert np.isnan(empty["lift"]).all() and (empty["iou10"] == 0).all() and (empty["mass"] == 0).all()


def test_row_percentile_matches_numpy() -> None:
    x = np.random.default_rng(2).random((50, P)).astype(np.float32)
    x[:, :40] = 0.5  # ties
    ordered = np.sort(x, axis=-1)
    for q in (90, 75, 50, 0, 100):
        np.testing.assert_array_equal(row_percentile(ordered, q), np.percentile(x, q, axis=-1))


def test_call_grounding_on_a_bundle_with_a_planted_object_glance() -> None:
    b = small()
    layout = b.layout
    cov = np.zeros((3, 16, 16), np.float32)
    cov[0, 2:4, 5:8] = 1.0  # 6 patches of the base camera
    key = layout.camera_region(0).start + 2 * 16 + 6  # patch (2, 6), on the object
    q = layout.action_query(3)
    att = b.attention[1, 2, 0, 0, :, q].astype(np.float64)  # every head of step 1, layer 2, action token 3
    att[:, key] = 0
    att *= 0.3 / att.sum(-1, keepdims=True)
    att[:, key] = 0.7
    b.attention[1, 2, 0, 0, :, q] = att
    g = call_grounding(action_maps(b), cov, has_mask=[True, True, False], image_mask=b.image_masks[0])
    assert g.cameras == ["base_0_rgb", "left_wrist_0_rgb"]  # the wrist mask is empty but present
    base = {k: v[0] for k, v in g.per_camera.items()}
    assert base["pointing_hit"][1, 2, 3] == 1 and base["mass"][1, 2, 3] >= 0.7
    assert base["iou10"][1, 2, 3] > 0
    others = np.ones(base["pointing_hit"].shape, bool)
    others[1, 2, 3] = False
    assert base["mass"][others].max() < 0.05  # thin uniform rows elsewhere
    assert g.prefix["object_mass"][1, 2, 3] == pytest.approx(base["mass"][1, 2, 3])
    s = grounding_summary(g)
    assert s["cameras"]["base_0_rgb"]["area_share"] == pytest.approx(6 / 256, abs=1e-6)  # rounded to 6 places
    assert len(s["cameras"]["base_0_rgb"]["by_layer"]["lift"]) == 3


def test_csv_has_one_row_per_cell_and_blank_nan(tmp_path) -> None:
    b = small()
    cov = np.zeros((3, 16, 16), np.float32)
    cov[1, 0, 0] = 1.0
    g = call_grounding(action_maps(b), cov, has_mask=[False, True, False])
    g.per_camera["lift"][0, 0, 0, 0] = np.nan
    to_csv(g, tmp_path / "m.csv", call=4)
    lines = (tmp_path / "m.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["call", "step", "layer", "action_token"]
    assert [h for h in header if h.startswith("left_wrist_0_rgb.")] == [f"left_wrist_0_rgb.{k}" for k in CAMERA_METRICS]
    assert len(lines) == 1 + 2 * 3 * 5
    first = dict(zip(header, lines[1].split(",")))
    assert first["call"] == "4" and first["left_wrist_0_rgb.lift"] == ""
    assert float(first["left_wrist_0_rgb.mass"]) == pytest.approx(float(g.per_camera["mass"][0, 0, 0, 0]), rel=1e-5)


def test_masks_of_the_wrong_shape_are_refused() -> None:
    b = small()
    with pytest.raises(AnalysisError, match="one coverage grid per camera slot"):
        call_grounding(action_maps(b), np.zeros((2, 16, 16)), has_mask=[True, True])
    with pytest.raises(AnalysisError, match="no camera has an object mask"):
        call_grounding(action_maps(b), np.zeros((3, 16, 16)), has_mask=[False, False, False])


# -- the mask transform ------------------------------------------------------------------------------------


def test_a_mask_in_the_camera_frame_lands_on_the_patches_the_model_saw() -> None:
    """A rectangle on the 16 px blocks of the 256 x 256 LIBERO frame: after the 180-degree rotation and
    resize_with_pad to 224, each 16 px block is one 14 px patch, mirrored in both axes."""
    frame = np.zeros((256, 256), bool)
    frame[32:64, 160:208] = True  # blocks rows 2..3, cols 10..12 of the camera frame
    cov = patch_coverage(frame)
    expected = np.zeros((16, 16), bool)
    expected[12:14, 3:6] = True  # rotated: rows 15-3..15-2, cols 15-12..15-10
    np.testing.assert_array_equal(cov > 0.5, expected)
    assert cov[expected].min() > 0.9  # interior of the object
    assert cov.sum() == pytest.approx(6.0, abs=0.05)  # area is kept: bilinear edges only move a sliver
    far = np.ones((16, 16), bool)
    far[11:15, 2:7] = False  # everything more than one patch away from the object
    assert cov[far].max() == 0.0


def test_a_non_square_frame_is_padded_like_the_image() -> None:
    frame = np.zeros((128, 256), bool)  # wide frame: resize to 224 x 112, then 56 px black bars top and bottom
    frame[:, :] = True
    cov = patch_coverage(frame, rotate=False)
    assert cov[:4].max() == 0 and cov[-4:].max() == 0  # the pad bars (4 patch rows each) cover nothing
    assert cov[4:12].min() > 0.99


def test_masks_round_trip_and_reorder_to_the_bundle(tmp_path) -> None:
    cov = np.zeros((2, 2, 16, 16), np.float32)
    cov[0, 0, 1, 1] = 1.0  # object a on the agent view
    cov[1, 0, 1, 2] = 0.5  # object b
    masks = CallMasks(camera_names=["base_0_rgb", "left_wrist_0_rgb"], objects=["a", "b"], coverage=cov,
                      has_mask=np.array([True, False]))
    path = save_masks(masks, masks_path(tmp_path / "bundles" / "inference_003.npz"))
    assert path.name == "inference_003.masks.npz"
    back = load_masks(path)
    assert back.objects == ["a", "b"]
    union, has = masks_for_bundle(back, ["left_wrist_0_rgb", "base_0_rgb", "right_wrist_0_rgb"])
    assert has.tolist() == [False, True, False]
    assert union[1, 1, 1] == 1.0 and union[1, 1, 2] == 0.5 and union[0].max() == 0


def test_masks_refuse_bad_files(tmp_path) -> None:
    bad = tmp_path / "x.masks.npz"
    np.savez(bad, format=np.asarray("other/1"))
    with pytest.raises(AnalysisError, match="format"):
        load_masks(bad)
    with pytest.raises(AnalysisError, match="no masks at"):
        load_masks(tmp_path / "missing.npz")
