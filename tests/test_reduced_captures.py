"""A capture reduced on the device (action rows only, prefix keys only, heads max-fused, float16) goes through every
output, and shows the same maxima as the full capture it was cut from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from render_support import tree_bytes

from pi0viz import visualize_attention
from pi0viz.analysis.metrics import analyze_call
from pi0viz.analysis.summaries import write_call_summaries
from pi0viz.core.bundle import CaptureBundle, load_bundle, save_bundle
from pi0viz.core.maps import fused_maps
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
from pi0viz.episode.aggregate import Selection, call_maps
from pi0viz.errors import BundleError
from pi0viz.render.engine import RenderJob, RenderOptions, render_bundle
from pi0viz.sweep.attention import summarize_call
from pi0viz.viewer.data import call_arrays

DRAWN = ["base_0_rgb", "left_wrist_0_rgb"]
OPTS = dict(steps="1", layers="2", action_tokens="0,3", workers=1)


def _full() -> CaptureBundle:
    b = synthetic_bundle(num_steps=2, num_layers=3, num_action_tokens=4, image_masks=(True, True, False), seed=5)
    b.image_masks[:, 2] = True  # a padded slot whose mask says True, as LIBERO's right wrist
    lay = b.layout
    place_hot_key(b, step=1, layer=2, action_token=3, head=6, key=lay.camera_region(0).start + 4 * 16 + 11, mass=0.9)
    place_hot_key(b, step=1, layer=2, action_token=0, head=2, key=lay.text_region.start + 7, mass=0.5)
    b.inference_step = 2
    return b


def _reduce(b: CaptureBundle) -> CaptureBundle:
    """What CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16") keeps."""
    lay = b.layout
    att = b.attention[..., lay.action_queries(), :lay.num_prefix_keys].max(axis=(3, 4), keepdims=True)
    arrays = b.to_arrays()
    arrays.update(attention=att.astype(np.float16), attention_queries=np.asarray("actions"),
                  attention_keys=np.asarray("prefix"), attention_heads=np.asarray("max"),
                  actions=np.zeros((1, 4, 7), np.float32))
    return CaptureBundle.from_arrays(arrays)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    full = _full()
    path = save_bundle(_reduce(full), tmp_path_factory.mktemp("bundles") / "inference_002.npz")
    return full, load_bundle(path)  # through the file, as a user has it


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def test_the_reduced_bundle_is_what_the_device_keeps(pair) -> None:
    _, red = pair
    D, L, B, K, G, Q, S = red.attention.shape
    assert red.attention.dtype == np.float16 and (K, G, Q, S) == (1, 1, 4, 3 * 256 + 48)
    assert (red.attention_queries, red.attention_keys, red.attention_heads) == ("actions", "prefix", "max")


def test_fused_maps_keep_the_full_maxima(pair) -> None:
    full, red = pair
    f, r = fused_maps(full), fused_maps(red)
    assert r.camera_names == f.camera_names == DRAWN and r.regions == f.regions
    np.testing.assert_array_equal(r.fused, _f16(f.fused))
    assert int(r.fused[1, 2, 3].argmax()) == 4 * 16 + 11


def test_render_bundle_and_visualize_attention_write_the_same_tree(pair, tmp_path: Path) -> None:
    full, red = pair
    a = render_bundle(red, tmp_path / "render_bundle", RenderOptions(**OPTS))
    assert a.files_written == 2 * 3  # 2 action tokens x (2 drawn cameras + the prompt)
    b = visualize_attention(red, out_dir=tmp_path / "visualize_bundle", options=RenderOptions(**OPTS))
    fields = {k: getattr(red, k) for k in (
        "images", "camera_names", "token_pieces", "image_masks", "token_mask", "num_state_tokens", "num_action_tokens",
        "attention_kind", "attention_heads", "attention_queries", "attention_keys", "patch_grid", "diffusion_times",
        "step_indices", "layer_indices", "token_ids", "prompt", "actions")}
    c = visualize_attention(red.attention, inference_step=2, out_dir=tmp_path / "visualize_fields",
                            options=RenderOptions(**OPTS), **fields)
    # As the LIBERO example used to call it: no attention_queries, but the action horizon says which rows these are.
    old = {k: v for k, v in fields.items() if k not in ("attention_queries", "attention_keys", "token_ids", "prompt",
                                                         "actions")}
    d = visualize_attention(red.attention, inference_step=2, out_dir=tmp_path / "visualize_old",
                            options=RenderOptions(**OPTS), **old)
    want = tree_bytes(tmp_path / "render_bundle")
    assert len(want) == 6 and not [p for p in want if "right_wrist" in p]
    for out, summary in (("visualize_bundle", b), ("visualize_fields", c), ("visualize_old", d)):
        assert tree_bytes(tmp_path / out) == want, out
        assert summary.files_written == a.files_written
    # The same maxima as the full capture, in the renderer's captions.
    job_full = RenderJob(full, str(tmp_path / "x"), 2, RenderOptions(workers=1))
    job_red = RenderJob(red, str(tmp_path / "y"), 2, RenderOptions(workers=1))
    np.testing.assert_array_equal(job_red.peaks, _f16(job_full.peaks))
    assert job_red.file_names == job_full.file_names == [*DRAWN, "text"]


def test_visualize_attention_refuses_a_bundle_with_fields(pair, tmp_path: Path) -> None:
    _, red = pair
    with pytest.raises(BundleError, match=r"CaptureBundle and also its field\(s\) \['camera_names'\]"):
        visualize_attention(red, camera_names=red.camera_names, out_dir=tmp_path)
    with pytest.raises(BundleError, match="needs \\['images'\\]"):
        visualize_attention(red.attention, camera_names=red.camera_names, token_pieces=red.token_pieces,
                            out_dir=tmp_path)


def test_viewer_summaries_metrics_episode_and_sweep_take_it(pair, tmp_path: Path) -> None:
    full, red = pair
    ref = fused_maps(full)
    v = call_arrays(red)
    assert v.heads is None and [r[0] for r in v.drawn_regions] == [*DRAWN, "text"]
    np.testing.assert_array_equal(v.cell_max, _f16(ref.fused).max(-1))
    (s,) = write_call_summaries(red, tmp_path, summaries="action_tokens", how="max")
    np.testing.assert_array_equal(s.maps[:, :, 0], _f16(ref.fused).max(axis=2))
    record, _ = analyze_call(red)
    assert record["heads_fused"] and record["regions"]["names"] == [*DRAWN, "text"]  # prefix keys only
    m_full, m_red = call_maps(full, Selection(step=1, layers="2")), call_maps(red, Selection(step=1, layers="2"))
    assert m_red.camera_names == m_full.camera_names == DRAWN
    hot = call_maps(red, Selection(step=1, layers="2", action_tokens="3"))  # one cell: its maxima exactly
    np.testing.assert_array_equal(hot.cameras.max(axis=(1, 2)), _f16(ref.peaks[1, 2, 3, :2]))
    np.testing.assert_allclose(m_red.cameras, m_full.cameras, rtol=2e-3, atol=1e-6)  # means of float16 maxima
    out_full, out_red = summarize_call(full), summarize_call(red, render_dir=str(tmp_path / "sweep_tree"))
    tree = tree_bytes(tmp_path / "sweep_tree" / "inference_timestep_2")  # --render: the whole tree, reduced capture
    assert len(tree) == 2 * 3 * 4 * 3 and not [p for p in tree if "right_wrist" in p]
    assert out_red["camera_names"].tolist() == out_full["camera_names"].tolist() == DRAWN
    np.testing.assert_array_equal(out_red["fused"], out_full["fused"])  # float16 either way
    assert out_red["actions"].shape == (4, 7)
