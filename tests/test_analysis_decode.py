"""Analysis over decode steps (pi0-FAST decoding bundles, pi0viz.capture/2): sinks, grounding metrics, region masses,
summaries, the metrics files and the report find exactly what a synthetic decoding call was built with.

Ground truth (PLANTED below), on openpi's aligned kv-cache layout (core.synthetic.synthetic_decode_bundle):
    a hot camera patch at ONE decode step and layer   -> grounding's hottest cell, the summary's hot block; no sink
    the prompt's <bos> in EVERY decode step of layer 2 -> a sink of layer 2 at every step, its share exact
    generated token 0 in every decode step of layer 0  -> a sink in the generated tokens' own key group
    generated token 1 at one decode step of layer 1   -> its mass in the "generated" region; no sink
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from render_support import block_levels, decode

from pi0viz.analysis import grounding as G
from pi0viz.analysis.maps import decode_key_maps
from pi0viz.analysis.masks import CallMasks, masks_path, save_masks
from pi0viz.analysis.metrics import analyze_call
from pi0viz.analysis.report import _region_curves, plot_region_mass, plot_sinks
from pi0viz.analysis.sinks import find_decode_sinks, sink_report
from pi0viz.analysis.summaries import episode_strip_from_bundles, parse_summaries, write_call_summaries
from pi0viz.cli import main
from pi0viz.core.decode_bundle import DecodeBundle, save_decode_bundle
from pi0viz.core.maps import decode_maps
from pi0viz.core.synthetic import place_hot_decode_key, synthetic_decode_bundle
from pi0viz.errors import AnalysisError

CAMS = ("base_0_rgb", "left_wrist_0_rgb")
GRID, T, VALID = 16, 16, 6  # 16 x 16 patches per camera, 16 prompt slots of which 6 are valid
J, L, HEADS = 6, 3, 4
PPC = GRID * GRID
P = len(CAMS) * PPC + T
HOT_STEP, HOT_LAYER, HOT_CAM, HOT_RC = 2, 1, 1, (5, 11)  # the hot patch: wrist camera, row 5, col 11
HOT_KEY = HOT_CAM * PPC + HOT_RC[0] * GRID + HOT_RC[1]
BOS_KEY, SINK_LAYER = len(CAMS) * PPC, 2  # the prompt's first slot
GEN_SINK_LAYER = 0  # generated token 0 (key P) in every step of layer 0
GEN_STEP, GEN_LAYER = 4, 1  # generated token 1 (key P + 1) at decode step 4, layer 1


def planted(seed: int = 0, inference_step: int | None = None) -> DecodeBundle:
    b = synthetic_decode_bundle(num_steps=J, num_layers=L, num_heads=HEADS, camera_names=CAMS, num_text_tokens=T,
                                num_valid_text=VALID, seed=seed, inference_step=inference_step)
    for h in range(HEADS):
        place_hot_decode_key(b, step=HOT_STEP, layer=HOT_LAYER, head=h, key=HOT_KEY, mass=0.7)
        place_hot_decode_key(b, step=GEN_STEP, layer=GEN_LAYER, head=h, key=P + 1, mass=0.6)
        for j in range(J):
            place_hot_decode_key(b, step=j, layer=SINK_LAYER, head=h, key=BOS_KEY, mass=0.5)
            place_hot_decode_key(b, step=j, layer=GEN_SINK_LAYER, head=h, key=P, mass=0.4)
    return b


def test_key_maps_unalign_the_cache_and_agree_with_decode_maps() -> None:
    b = planted()
    assert (b.key_source[0] != np.arange(P)).any()  # the cache really is aligned: slots are not keys
    m = decode_key_maps(b)
    assert m.mean.shape == m.peak.shape == (J, L, P + J)
    assert int(m.mean[HOT_STEP, HOT_LAYER].argmax()) == HOT_KEY
    assert m.mean[HOT_STEP, HOT_LAYER, HOT_KEY] == pytest.approx(0.7, abs=1e-6)  # every head put 0.7 there
    assert m.mean[GEN_STEP, GEN_LAYER, P + 1] == pytest.approx(0.6, abs=1e-6)
    np.testing.assert_allclose(m.mean.sum(-1), 1.0, atol=1e-5)  # rows stay distributions
    # step j sees the tokens generated at steps 0..j, nothing later
    assert (m.valid[:, P:] == (np.arange(J)[None] <= np.arange(J)[:, None])).all()
    assert (m.mean[:, :, P:][~m.valid[:, None, P:].repeat(L, 1)] == 0).all()
    assert [r.name for r in m.regions] == [*CAMS, "text", "generated"]
    # one fused-maps step: the head max on the drawn keys IS decode_maps' map, the masses are its masses
    ref = decode_maps(b)
    np.testing.assert_array_equal(m.peak[..., ref.drawn.keys], ref.fused)
    masses = np.stack([m.mean[..., r.slice].sum(-1) for r in m.regions], axis=-1)
    np.testing.assert_allclose(masses, ref.region_mass, atol=1e-6)


def test_sinks_are_the_keys_every_decode_step_reads() -> None:
    m = decode_key_maps(planted())
    result = find_decode_sinks(m)
    assert result.sinks.shape == (J, L, P + J)
    by_layer = {layer: sorted(set(np.flatnonzero(result.sinks[:, layer].any(axis=0)).tolist())) for layer in range(L)}
    # the hot patch (one step) and generated token 1 (one step) are not sinks; <bos> and generated token 0 are
    assert by_layer == {GEN_SINK_LAYER: [P], HOT_LAYER: [], SINK_LAYER: [BOS_KEY]}
    assert result.sinks[:, SINK_LAYER, BOS_KEY].all() and result.sinks[:, GEN_SINK_LAYER, P].all()
    np.testing.assert_allclose(result.share[:, SINK_LAYER], 0.5, atol=1e-6)  # the exact planted share
    np.testing.assert_allclose(result.share[:, HOT_LAYER], 0.0)
    report = sink_report(result, m)
    keys = {(k["region"], k.get("piece"), k.get("token", k.get("index"))): k["cells"] for k in report["keys"]}
    assert keys == {("text", "<bos>", 0): J, ("generated", "a0", 0): J}
    assert report["steps"] == list(range(J)) and len(report["share"]) == J
    assert {(c["step"], c["layer"]) for c in report["cells"]} == {(j, l) for j in range(J)
                                                                   for l in (GEN_SINK_LAYER, SINK_LAYER)}


def test_grounding_points_at_the_hot_patch_at_its_decode_step(tmp_path: Path) -> None:
    b = planted()
    coverage = np.zeros((len(CAMS), GRID, GRID), np.float32)
    coverage[HOT_CAM, HOT_RC[0], HOT_RC[1]] = 1.0  # the object is exactly the hot patch
    g = G.decode_grounding(decode_key_maps(b), coverage, [False, True])
    assert g.cameras == [CAMS[HOT_CAM]] and g.shape == (J, L, 1) and g.call_kind == "decoding"
    assert g.per_camera["pointing_hit"][0, HOT_STEP, HOT_LAYER, 0] == 1
    mass = g.per_camera["mass"][0, ..., 0]
    assert mass[HOT_STEP, HOT_LAYER] == pytest.approx(0.7, abs=1e-6)
    assert np.delete(mass.reshape(-1), HOT_STEP * L + HOT_LAYER).max() < 0.01  # elsewhere: the thin spread only
    in_camera = g.per_camera["mass_in_camera"][0, ..., 0]
    assert np.unravel_index(in_camera.argmax(), in_camera.shape) == (HOT_STEP, HOT_LAYER)
    assert g.per_camera["lift"][0, HOT_STEP, HOT_LAYER, 0] > 100  # 1 patch of 256 holds most of the camera's mass
    prefix = g.prefix["prefix_mass"][..., 0]  # the rest of each row is on the tokens generated so far
    maps = decode_key_maps(b)
    np.testing.assert_allclose(prefix + maps.mean[..., P:].sum(-1), 1.0, atol=1e-5)
    assert prefix[GEN_STEP, GEN_LAYER] < 0.4  # 0.6 on generated token 1
    assert (g.prefix["text_share"][:, SINK_LAYER, 0] >= 0.5).all()
    header, rows = G.csv_table(g, call=7)
    rows = list(rows)
    assert header[:4] == ["call", "decode_step", "layer", f"{CAMS[HOT_CAM]}.mass"] and len(rows) == J * L
    assert rows[HOT_STEP * L + HOT_LAYER][:3] == ["7", str(HOT_STEP), str(HOT_LAYER)]


def test_metrics_and_report_cli_over_decoding_bundles(tmp_path: Path) -> None:
    folder = tmp_path / "ep" / "bundles"
    paths = [save_decode_bundle(planted(seed=n, inference_step=n), folder / f"inference_{n:03d}.npz")
             for n in range(2)]
    coverage = np.zeros((1, len(CAMS), GRID, GRID), np.float32)
    coverage[0, HOT_CAM, HOT_RC[0], HOT_RC[1]] = 1.0  # call 0's object: the hot patch of the wrist camera
    save_masks(CallMasks(list(CAMS), ["cube"], coverage, np.array([False, True])), masks_path(paths[0]))
    result = CliRunner().invoke(main, ["metrics", str(tmp_path / "ep")])
    assert result.exit_code == 0, result.output
    grounded = json.loads(paths[0].with_name("inference_000.metrics.json").read_text())["grounding"]
    assert grounded["objects"] == ["cube"] and grounded["steps"] == list(range(J))
    by_step = grounded["cameras"][CAMS[HOT_CAM]]["by_step"]["mass"]  # [J] over the layers
    assert int(np.argmax(by_step)) == HOT_STEP and by_step[HOT_STEP] == pytest.approx(0.7 / L, abs=0.01)
    table = paths[0].with_name("inference_000.grounding.csv").read_text().splitlines()
    assert table[0].startswith("call,decode_step,layer,") and len(table) == 1 + J * L
    assert not paths[1].with_name("inference_001.grounding.csv").exists()  # no masks: sinks and masses only
    record = json.loads(paths[1].with_name("inference_001.metrics.json").read_text())
    assert record["call"] == 1 and record["call_kind"] == "decoding"
    assert record["generated"] == [f"a{j}" for j in range(J)]
    assert record["regions"]["names"] == [*CAMS, "text", "generated"]
    mass = np.asarray(record["regions"]["mass"])  # [M, J, L]
    assert mass.shape == (len(CAMS) + 2, J, L)
    assert mass[-1, GEN_STEP, GEN_LAYER] >= 0.6 and mass[-2, :, SINK_LAYER].min() >= 0.5
    assert {k["region"] for k in record["sinks"]["keys"]} == {"text", "generated"}
    episode = json.loads((folder / "episode_metrics.json").read_text())
    assert [c["call_kind"] for c in episode["calls"]] == ["decoding", "decoding"]
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "every decode step's query" in page and "action token" not in page
    assert page.count("data:image/png;base64,") >= 3  # region masses, sinks, the episode's section
    assert (tmp_path / "run_metrics.json").is_file()


def test_report_averages_decode_steps_over_the_calls_that_reached_them() -> None:
    def call(values: np.ndarray) -> dict:  # values [J, L] on the one region
        return {"call_kind": "decoding", "regions": {"names": ["text"], "mass": [values.tolist()]},
                "sink_share": values.tolist()}

    short, long = np.full((3, 2), 0.2), np.full((5, 2), 0.6)  # calls that stopped at different decode steps
    _, mass = _region_curves([call(short), call(long)])
    np.testing.assert_allclose(mass[0], [[0.4, 0.4]] * 3 + [[0.6, 0.6]] * 2)  # steps 3, 4: the long call only
    assert plot_region_mass([call(short), call(long)], "t").startswith("data:image/png;base64,")
    assert plot_sinks([call(short), call(long)]).startswith("data:image/png;base64,")


def test_summaries_over_decode_steps(tmp_path: Path) -> None:
    b = planted(inference_step=4)
    results = write_call_summaries(b, tmp_path, alpha=1.0)  # the decoding defaults; a pure heat map: colors = levels
    assert [r.name for r in results] == ["mean_over_layers", "mean_over_decode_steps", "mean_over_layers_decode_steps"]
    root = tmp_path / "inference_timestep_4" / "summary"
    per_step = root / "mean_over_layers"
    assert sorted(p.name for p in per_step.iterdir()) == sorted(f"decode_step_{j}" for j in range(J))
    names = {f"fused_attention_on_{n}.jpg" for n in (*CAMS, "text", "generated")}
    assert {p.name for p in (per_step / f"decode_step_{HOT_STEP}").iterdir()} == names
    hot = block_levels(decode(per_step / f"decode_step_{HOT_STEP}" / f"fused_attention_on_{CAMS[HOT_CAM]}.jpg"))
    assert np.unravel_index(hot.argmax(), hot.shape) == HOT_RC and hot[HOT_RC] >= 250  # the cell's top
    cold = block_levels(decode(per_step / "decode_step_0" / f"fused_attention_on_{CAMS[HOT_CAM]}.jpg"))
    assert cold.max() < 60  # no hot patch at decode step 0: <bos> (layer 2) sets that cell's scale
    per_layer = root / "mean_over_decode_steps"
    assert sorted(p.name for p in per_layer.iterdir()) == [f"layer_{l}" for l in range(L)]
    assert {p.name for p in (per_layer / "layer_1").iterdir()} == names - {"fused_attention_on_generated.jpg"}
    levels = block_levels(decode(per_layer / f"layer_{HOT_LAYER}" / f"fused_attention_on_{CAMS[HOT_CAM]}.jpg"))
    assert np.unravel_index(levels.argmax(), levels.shape) == HOT_RC
    whole = results[2]
    assert whole.maps.shape[:3] == (1, 1, 1)
    r = int(np.flatnonzero(decode_maps(b).drawn.keys == HOT_KEY)[0])
    assert whole.maps[0, 0, 0, r] == pytest.approx(decode_maps(b).fused[..., r].mean(), rel=1e-6)
    for bad, match in ((dict(summaries="action_tokens"), "no action tokens"), (dict(batch=1), "batch"),
                       (dict(summaries=None), "summaries")):
        with pytest.raises(AnalysisError, match=match) as err:
            write_call_summaries(b, tmp_path / "refused", **bad)
        assert "\n" not in str(err.value) and not (tmp_path / "refused").exists()  # checked before any write
    assert parse_summaries("layers+steps", decoding=True) == [("steps", "layers")]
    paths = [save_decode_bundle(planted(seed=n, inference_step=n), tmp_path / f"inference_{n:03d}.npz")
             for n in range(2)]
    strip = decode(episode_strip_from_bundles(paths, tmp_path / "episode_summary.jpg"))
    assert strip.shape[0] > 2 * GRID * 14 and strip.shape[1] == 2 * GRID * 14  # two camera rows, two calls


def test_analyze_call_keeps_the_pi0_record_unchanged() -> None:
    from bundle_support import small

    record, _ = analyze_call(small())
    assert "call_kind" not in record and "generated" not in record
    assert record["regions"]["names"][-2:] == ["state", "actions"]
