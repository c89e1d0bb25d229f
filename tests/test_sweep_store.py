"""The sweep's parts that need neither Ray nor LIBERO: records, resume state, disk guard, results, one call's
attention summary (with a planted hot spot), and the command's one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundle_support import small
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.core.fusion import fuse_call
from pi0viz.errors import ConfigError, DiskSpaceError
from pi0viz.sweep import disk, results
from pi0viz.sweep.attention import summarize_call
from pi0viz.sweep.finish import assemble_record
from pi0viz.sweep.metrics_hook import call_metrics
from pi0viz.sweep.plan import EpisodeKey, SweepSettings, plan_episodes
from pi0viz.sweep.store import RunStore, record_content


def _record(key: EpisodeKey, success: bool, calls: list[dict]) -> dict:
    outcome = {"key": {"suite": key.suite, "task": key.task, "trial": key.trial, "seed": key.seed},
               "prompt": f"task {key.task}", "success": success, "steps": 30, "calls": len(calls), "error": None}
    timing = {"wall_s": 10.0, "sim_s": 6.0, "policy_s": 3.0, "attention_wait_s": 0.5}
    return assemble_record(outcome, timing, calls, video=None)


def test_summary_of_a_call_keeps_the_planted_hot_key_and_matches_the_fusion_pass() -> None:
    bundle = small(num_steps=3, num_layers=2)
    layout = bundle.layout
    hot = layout.camera_region(1).start + 37  # patch 37 of the wrist camera, for every action token and head
    att = bundle.attention.copy()
    actions = layout.action_queries()
    att[..., actions, :] *= 0.5
    att[..., actions, hot] += 0.5  # rows still sum to 1
    bundle.attention = att
    out = summarize_call(bundle, steps="0,2", layers="1")
    assert out["fused"].dtype == np.float16 and out["fused"].shape[:3] == (2, 1, 5)
    r = int(np.flatnonzero(out["keys"] == hot)[0])
    assert (out["fused"].argmax(axis=-1) == r).all()  # the planted key is the hottest of every cell
    ref = fuse_call(att[[0, 2]][:, [1]], layout, bundle.image_masks, bundle.token_mask)
    np.testing.assert_array_equal(out["fused"], ref.fused.astype(np.float16))
    assert list(out["step_indices"]) == [0, 2] and list(out["layer_indices"]) == [1]
    assert out["images"].shape[0] == int(bundle.image_masks[0].sum())


OBJECT = [(5, 8), (5, 9), (6, 8), (6, 9)]  # patch (row, col) of the planted object on the base camera


def _masks(patches: list[tuple[int, int]]):
    from pi0viz.analysis.masks import CallMasks

    cov = np.zeros((1, 3, 16, 16), np.float32)  # one object; the wrist has a mask but does not see it
    for r, c in patches:
        cov[0, 0, r, c] = 1.0
    return CallMasks(camera_names=["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"], objects=["bowl_1"],
                     coverage=cov, has_mask=np.array([True, True, False]))


def _planted_on_object(layer: int):
    """A bundle whose action tokens put half of every row on the OBJECT patches in one layer only."""
    bundle = small(num_steps=2, num_layers=3, image_masks=(True, True, False))
    layout = bundle.layout
    base = layout.camera_region(0).start
    att = bundle.attention.copy()
    actions = layout.action_queries()
    rows = att[:, layer, ..., actions, :]  # [D, B, K, G, A, S]
    rows *= 0.5
    for r, c in OBJECT:
        rows[..., base + r * 16 + c] += 0.5 / len(OBJECT)
    att[:, layer, ..., actions, :] = rows
    bundle.attention = att
    return bundle


def test_call_metrics_light_up_the_object_the_attention_was_planted_on() -> None:
    bundle = _planted_on_object(layer=2)
    m = call_metrics(bundle, _masks(OBJECT))
    assert call_metrics(bundle, None) == {}  # no masks: no grounding
    assert all(v.dtype == np.float32 and v.shape == () for v in m.values())
    assert "right_wrist_0_rgb.lift" not in m  # the padded slot has no metrics
    # the planted layer: every action token's hottest base patch is on the object, half its row lands there
    assert m["base_0_rgb.pointing_hit.best_layer"] == 1.0
    assert m["base_0_rgb.mass_in_camera.best_layer"] > 0.5
    assert m["base_0_rgb.lift.best_layer"] > 30  # the object is 4 of 256 patches: uniform would give 1
    assert m["base_0_rgb.lift.best_layer"] > m["base_0_rgb.lift"] > 1  # the mean over layers is diluted
    assert m["base_0_rgb.iou10.best_layer"] == pytest.approx(4 / 26, abs=1e-5)  # top 26 patches hold all 4 object ones
    assert m["base_0_rgb.entropy"] < 1 and m["prefix.object_share"] > 0
    assert np.isnan(m["left_wrist_0_rgb.lift"])  # undefined: the wrist does not see the object
    # the same attention against masks somewhere else: no lift, no hit
    away = call_metrics(bundle, _masks([(12, 1), (12, 2)]))
    assert away["base_0_rgb.pointing_hit.best_layer"] < 0.5 and away["base_0_rgb.lift.best_layer"] < 3
    # the sweep's attention task stores exactly these
    out = summarize_call(bundle, layers="0", masks=_masks(OBJECT))
    assert sorted(out["metrics"]) == sorted(m)
    assert all(np.array_equal(out["metrics"][k], m[k], equal_nan=True) for k in m)


def test_results_show_grounding_per_task_and_by_outcome(tmp_path: Path) -> None:
    store = RunStore(tmp_path).open(SweepSettings())
    keys = plan_episodes("libero_spatial", [0, 1], 1, seed=7)
    grounded = summarize_call(_planted_on_object(layer=1), masks=_masks(OBJECT))
    away = summarize_call(_planted_on_object(layer=1), masks=_masks([(12, 1)]))
    store.write_record(keys[0], _record(keys[0], True, [grounded, grounded]))
    store.write_record(keys[1], _record(keys[1], False, [away]))
    summary = results.write_results(store, keys, SweepSettings())
    g = summary["grounding"]
    assert summary["grounding_status"] == "computed"
    assert g["success / base_0_rgb.pointing_hit.best_layer"] == 1.0
    assert g["failure / base_0_rgb.pointing_hit.best_layer"] < 0.5
    assert g["task 0 / base_0_rgb.lift"] == pytest.approx(float(grounded["metrics"]["base_0_rgb.lift"]))
    assert "success / left_wrist_0_rgb.lift" not in g  # NaN in every call: left out, not NaN
    json.loads((tmp_path / "results.json").read_text())  # valid JSON
    md = (tmp_path / "results.md").read_text()
    assert "| metric | success | failure | task 0 | task 1 |" in md
    assert "| base_0_rgb.pointing_hit.best_layer | 1 | " in md


def test_records_are_atomic_keyed_and_resume_state_is_on_disk(tmp_path: Path) -> None:
    settings = SweepSettings(max_calls=2)
    store = RunStore(tmp_path).open(settings)
    a, b = plan_episodes("libero_spatial", [3], 2, seed=7)
    call = summarize_call(small())
    store.mark_started(a, "env-0")
    store.mark_started(b, "env-1")
    assert store.is_partial(a) and not store.is_done(a)
    store.write_record(a, _record(a, True, [call, call]))
    assert store.is_done(a) and not store.is_partial(a) and store.is_partial(b)
    assert list(store.finished()) == [a]
    rec = store.load_record(a)
    assert rec["fused"].shape[0] == 2 and json.loads(str(rec["meta"]))["success"] is True
    assert "timing" not in record_content(rec) and "fused" in record_content(rec)
    assert not list(store.episodes.glob(".*"))  # no temporary files left behind
    with pytest.raises(ConfigError, match="max_calls"):  # a resume must use the same settings
        RunStore(tmp_path).open(SweepSettings(max_calls=3))


def test_results_table_counts_successes_per_task(tmp_path: Path) -> None:
    store = RunStore(tmp_path).open(SweepSettings())
    keys = plan_episodes("libero_spatial", [0, 4], 3, seed=7)
    outcomes = {keys[0]: True, keys[1]: False, keys[2]: True, keys[3]: False, keys[4]: False}  # keys[5] unfinished
    for key, ok in outcomes.items():
        store.write_record(key, _record(key, ok, []))
    summary = results.write_results(store, keys, SweepSettings())
    rows = {r["task"]: r for r in summary["tasks"]}
    assert (rows[0]["episodes"], rows[0]["successes"]) == (3, 2) and rows[0]["success_rate"] == pytest.approx(2 / 3)
    assert (rows[4]["episodes"], rows[4]["planned"], rows[4]["successes"]) == (2, 3, 0)
    assert summary["total"] == {"planned": 6, "episodes": 5, "successes": 2, "success_rate": 0.4}
    assert summary["timing"]["attention_wait_share"] == pytest.approx(0.05)
    md = (tmp_path / "results.md").read_text()
    assert "| 0 | task 0 | 3 | 2 | 66.7 % |" in md and "| 4 | task 4 | 2 of 3 | 0 | 0.0 % |" in md
    assert "grounding metrics: not computed" in md and summary["grounding"] is None  # records without metrics


def test_disk_estimate_and_refusal(tmp_path: Path) -> None:
    full = disk.CallShape(steps=10, layers=18, action_tokens=50)
    assert full.jpeg_files() == 27_000  # LIBERO: 2 cameras + the prompt per cell
    assert full.record_bytes() < full.jpeg_bytes() / 20
    est = disk.estimate(full, episodes=500, calls=44, frames=220, video=True, render=True)
    assert est.jpeg_trees == 500 * 44 * 27_000 * disk.JPEG_BYTES_PER_FILE
    with pytest.raises(DiskSpaceError, match="needs about"):
        disk.check_free(tmp_path / "not" / "yet", est.total, what="this sweep")
    assert disk.check_free(tmp_path, 1, what="x") > 0


def test_command_refuses_a_sweep_the_disk_cannot_hold_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["sweep", "--episodes-per-task", "100", "--render", "--out", str(out)])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert "JPEG trees" in lines[-2]  # the expected disk use is printed first
    assert lines[-1].startswith("pi0viz sweep: error: this sweep needs about") and "Traceback" not in res.output
    assert not out.exists()  # refused before writing anything
    res = CliRunner().invoke(main, ["sweep", "--policy", "gpu", "--out", str(out)])
    assert res.exit_code == 1 and "policy 'gpu' is not a policy spec" in res.output
    res = CliRunner().invoke(main, ["sweep", "--policy", f"checkpoint:{tmp_path}", "--out", str(out)])
    assert res.exit_code == 1 and "expected an openpi checkpoint folder" in res.output and not out.exists()


def test_example_refuses_default_jpeg_trees_the_disk_cannot_hold(tmp_path: Path) -> None:
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("libero_example_guard", root / "examples" / "libero" / "main.py")
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)
    args = example.parse_args(["--policy", "tiny", "--num-trials-per-task", "10000000",
                               "--attention-out", str(tmp_path / "viz")])
    with pytest.raises(DiskSpaceError, match="--bundles-only"):
        example.guard_disk(args, num_tasks=10)
    small_run = example.parse_args(["--policy", "tiny", "--num-trials-per-task", "1", "--max-inference-calls", "1",
                                    "--attention-out", str(tmp_path / "viz")])
    assert example.guard_disk(small_run, num_tasks=1).jpeg_trees > 0  # fits: returns the estimate
