"""One bundle through every output: the tree, the viewer, the summaries, the metrics, the episode aggregate (video
and Rerun) and the sweep record agree on the drawn cameras, the maxima and the region masses.

The bundle is LIBERO-like: the right wrist is a padded slot whose image mask says True (openpi leaves its keys at
exactly 0 attention), so every output must leave it out by the one camera rule of pi0viz.core.maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from render_support import cell, jpgs

from pi0viz.analysis.maps import action_maps
from pi0viz.analysis.metrics import analyze_call
from pi0viz.analysis.summaries import write_call_summaries
from pi0viz.core.maps import fused_maps
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
from pi0viz.episode.aggregate import Selection, call_maps
from pi0viz.render.engine import RenderJob, RenderOptions, render_bundle
from pi0viz.sweep.attention import summarize_call
from pi0viz.viewer.data import call_arrays, decode_fused

DRAWN = ["base_0_rgb", "left_wrist_0_rgb"]
D_HOT, L_HOT, A_HOT = 1, 2, 3  # the cell with the planted hot spots


@pytest.fixture(scope="module")
def bundle():
    b = synthetic_bundle(num_steps=2, num_layers=3, num_action_tokens=4, image_masks=(True, True, False), seed=3)
    b.image_masks[:, 2] = True  # the padded right wrist, unmarked: only its zero attention tells
    lay = b.layout
    place_hot_key(b, step=D_HOT, layer=L_HOT, action_token=A_HOT, head=5, key=lay.camera_region(0).start + 4 * 16 + 11,
                  mass=0.9)
    place_hot_key(b, step=D_HOT, layer=L_HOT, action_token=A_HOT, head=1, key=lay.camera_region(1).start + 37, mass=0.6)
    place_hot_key(b, step=0, layer=0, action_token=0, head=0, key=lay.text_region.start + 4, mass=0.7)
    b.inference_step = 6
    return b


@pytest.fixture(scope="module")
def ref(bundle):
    return fused_maps(bundle)


def test_the_reference_sees_the_planted_spots(bundle, ref) -> None:
    assert ref.camera_names == DRAWN and [r[0] for r in ref.regions] == [*DRAWN, "text"]
    hot = ref.fused[D_HOT, L_HOT, A_HOT]
    assert int(hot.argmax()) == 4 * 16 + 11 and hot.max() >= 0.9 - 1e-6
    assert ref.peaks[D_HOT, L_HOT, A_HOT, 1] >= 0.6 - 1e-6 and ref.peaks[0, 0, 0, 2] >= 0.7 - 1e-6


def test_the_tree_draws_the_drawn_cameras_with_the_reference_numbers(bundle, ref, tmp_path: Path) -> None:
    job = RenderJob(bundle, str(tmp_path / "job"), 6, RenderOptions(workers=1))
    assert job.file_names == [*DRAWN, "text"]
    assert any("right_wrist_0_rgb" in n and "0 attention" in n for n in job.notes)
    np.testing.assert_array_equal(job.peaks, ref.peaks)
    np.testing.assert_array_equal(job.mass, ref.region_mass)
    assert job.regions == ref.regions
    render_bundle(bundle, tmp_path, RenderOptions(steps=str(D_HOT), layers=str(L_HOT), action_tokens=str(A_HOT),
                                                  workers=1))
    folder = cell(tmp_path, D_HOT, A_HOT, L_HOT, inference=6)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"fused_attention_on_{n}.jpg" for n in [*DRAWN, "text"])


def test_the_viewer_draws_the_same_cameras_maxima_and_masses(bundle, ref) -> None:
    call = call_arrays(bundle)
    assert [r[0] for r in call.drawn_regions] == [*DRAWN, "text"] and sorted(call.images) == sorted(DRAWN)
    assert call.image_masks == [True, True, False]
    np.testing.assert_array_equal(call.drawn_keys, ref.keys)
    np.testing.assert_allclose(call.cell_max, ref.fused.max(-1), rtol=1e-6)
    decoded = decode_fused(call)
    assert int(decoded[D_HOT, L_HOT, A_HOT].argmax()) == int(ref.fused[D_HOT, L_HOT, A_HOT].argmax())
    np.testing.assert_allclose(decoded, ref.fused, atol=float(ref.fused.max()) * 0.01)
    names = [n for n, _ in call.mass_regions]
    at = [names.index(n) for n in [*DRAWN, "prompt"]]
    mean_mass = call.mass[..., -1, :].astype(np.float64) / 65535  # index N: the mean over heads
    np.testing.assert_allclose(mean_mass[..., at], ref.region_mass, atol=2e-5)


def test_the_summaries_draw_the_same_cameras_and_reduce_the_reference(bundle, ref, tmp_path: Path) -> None:
    (s,) = write_call_summaries(bundle, tmp_path, summaries="action_tokens", how="max")
    assert [r[0] for r in s.regions] == [*DRAWN, "text"]
    np.testing.assert_array_equal(s.maps[:, :, 0], ref.fused.max(axis=2))
    np.testing.assert_array_equal(s.mass[:, :, 0], ref.region_mass.max(axis=2))
    folder = tmp_path / "inference_timestep_6" / "summary" / s.name / f"diffusion_timestep_{D_HOT}" / f"layer_{L_HOT}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"fused_attention_on_{n}.jpg" for n in [*DRAWN, "text"])
    assert not [p for p in jpgs(tmp_path) if "right_wrist" in p.name]


def test_the_metrics_measure_the_same_cameras_maxima_and_masses(bundle, ref) -> None:
    maps = action_maps(bundle)
    np.testing.assert_array_equal(maps.peak[..., ref.keys], ref.fused)
    coverage = np.zeros((3, 16, 16), np.float32)
    coverage[:, 4, 11] = 1.0  # every slot has a mask, the padded one too: it is still not measured
    record, g = analyze_call(bundle, coverage=coverage, has_mask=np.array([True, True, True]))
    assert g is not None and g.cameras == DRAWN and list(record["grounding"]["cameras"]) == DRAWN
    regions = record["regions"]
    assert regions["names"] == [*DRAWN, "text", "state", "actions"]
    mass = np.asarray(regions["mass"])  # [M, D, L], head-mean, averaged over the action tokens
    np.testing.assert_allclose(mass[:3].transpose(1, 2, 0), ref.region_mass.mean(axis=2), atol=2e-6)
    # The hot base patch is the pointing target of the planted cell on the base camera.
    assert g.per_camera["pointing_hit"][0, D_HOT, L_HOT, A_HOT] == 1.0


def test_the_episode_aggregate_shows_the_same_cameras_maxima_and_masses(bundle, ref) -> None:
    m = call_maps(bundle, Selection(step=D_HOT, layers=str(L_HOT), action_tokens=str(A_HOT)))
    assert m.camera_names == DRAWN and m.images.shape[0] == 2 and m.region_names == [*DRAWN, "prompt"]
    np.testing.assert_array_equal(m.cameras.max(axis=(1, 2)), ref.peaks[D_HOT, L_HOT, A_HOT, :2])
    assert np.unravel_index(m.cameras[0].argmax(), (16, 16)) == (4, 11)
    np.testing.assert_array_equal(m.mass, ref.region_mass[D_HOT, L_HOT, A_HOT])
    np.testing.assert_array_equal(m.prompt, ref.fused[D_HOT, L_HOT, A_HOT, ref.regions[-1][1]:])
    whole = call_maps(bundle, Selection(step=D_HOT))  # the default: every layer and action token
    np.testing.assert_allclose(whole.mass, ref.region_mass[D_HOT].mean(axis=(0, 1)), rtol=1e-6)


def test_the_sweep_record_keeps_the_same_cameras_maxima_and_masses(bundle, ref) -> None:
    out = summarize_call(bundle)
    assert out["camera_names"].tolist() == DRAWN and out["images"].shape[0] == 2
    assert out["region_names"].tolist() == [*DRAWN, "text"]
    np.testing.assert_array_equal(out["keys"], ref.keys)
    np.testing.assert_array_equal(out["fused"], ref.fused.astype(np.float16))
    np.testing.assert_array_equal(out["region_mass"], ref.region_mass.astype(np.float16))
    np.testing.assert_array_equal(out["region_bounds"], [[s, e] for _, s, e in ref.regions])
    assert out["token_pieces"].tolist() == ref.text_pieces
