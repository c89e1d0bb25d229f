"""The capture bundle format: round trips, layout derivation, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from bundle_support import small

from pi0viz import AttentionLayout, BundleError, CaptureBundle, load_bundle, save_bundle
from pi0viz.core.synthetic import place_hot_key


def test_round_trip_is_exact(tmp_path):
    b = small(dtype=np.float16)
    b.inference_step = 7
    path = save_bundle(b, tmp_path / "call.npz")
    c = load_bundle(path)
    for key, value in b.to_arrays().items():
        np.testing.assert_array_equal(c.to_arrays()[key], value, err_msg=key)
    assert c.attention.dtype == np.float16 and c.inference_step == 7
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_pi0_layout_regions():
    layout = small().layout
    names = [(r.name, r.start, r.stop) for r in layout.regions()]
    assert names == [("base_0_rgb", 0, 256), ("left_wrist_0_rgb", 256, 512), ("right_wrist_0_rgb", 512, 768),
                     ("text", 768, 816), ("state", 816, 817), ("actions", 817, 822)]
    assert layout.action_query(0) == 1 and layout.action_queries() == slice(1, 6)


def test_pi05_layout_is_derived_not_hard_coded():
    b = small(num_text_tokens=200, num_state_tokens=0, num_action_tokens=10)
    assert b.attention.shape[-2:] == (10, 768 + 200 + 10)
    assert [r.kind for r in b.layout.regions()] == ["camera"] * 3 + ["text", "action"]
    assert b.layout.action_query(0) == 0


def test_reduced_layout():
    layout = AttentionLayout(("a", "b"), (4, 4), 6, 1, 3, keys="prefix", queries="actions")
    assert layout.num_keys == 2 * 16 + 6 and layout.num_queries == 3
    assert layout.state_region is None and layout.action_query(2) == 2
    with pytest.raises(KeyError, match="unknown camera 'c'"):
        layout.camera_index("c")


def test_synthetic_rows_are_distributions_and_hot_key_lands():
    b = small()
    place_hot_key(b, step=1, layer=2, action_token=3, head=6, key=4 * 16 + 11, mass=0.9)
    sums = b.attention.sum(-1)
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    row = b.attention[1, 2, 0, 0, 6, b.layout.action_query(3)]
    assert row.argmax() == 4 * 16 + 11 and row[4 * 16 + 11] == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.__setitem__("attention", a["attention"][..., :-1]), "expects S = 822"),
        (lambda a: a.__setitem__("attention", a["attention"][0]), "7-d array"),
        (lambda a: a.__setitem__("format", np.asarray("pi0viz.capture/99")), "unknown bundle format"),
        (lambda a: a.pop("token_mask"), "missing required keys"),
        (lambda a: a.__setitem__("images", a["images"].astype(np.float32)), "images must be uint8"),
        (lambda a: a.__setitem__("image_masks", a["image_masks"][:, :2]), r"image_masks must have shape \[1, 3\]"),
        (lambda a: a.__setitem__("attention", a["attention"][..., :-1, :]), "expect Q = 6"),
        (lambda a: a["attention"].__setitem__((0, 0, 0, 0, 0, 0, 0), np.nan), "NaN"),
        (lambda a: a["attention"].__setitem__((0, 0, 0, 0, 0, 0, 0), np.inf), "inf"),
        (lambda a: a.__setitem__("attention_kind", np.asarray("softmax")), "'probs' or 'logits'"),
        (lambda a: a.__setitem__("camera_names", np.asarray(["a", "a", "b"])), "unique"),
    ],
)
def test_bad_bundles_get_clear_errors(mutate, message):
    arrays = {k: np.array(v) for k, v in small().to_arrays().items()}
    mutate(arrays)
    with pytest.raises(BundleError, match=message):
        CaptureBundle.from_arrays(arrays)


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, format=np.asarray("pi0viz.capture/1"), attention=np.array([object()], dtype=object))
    with pytest.raises(BundleError, match="dtype object.*refused.*pickle"):
        load_bundle(path)


def test_load_missing_and_truncated_files(tmp_path):
    with pytest.raises(BundleError, match="no capture bundle"):
        load_bundle(tmp_path / "nope.npz")
    good = save_bundle(small(), tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(BundleError):
        load_bundle(bad)
