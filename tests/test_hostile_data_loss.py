"""Hostile inputs, issue 20 "Nothing lost": outputs that cannot be written completely, refused sweeps, resumed
sweeps over damaged records, indices that name folders, output permissions and demos that fail at load.

Every case asserts the one line a user gets (CLI: exit 1, one error line, no traceback), and that nothing was
lost or left behind: an older output byte-identical (and, for outputs made of several files, the whole set as it
was), no temporary. Full and read-only disks are real small tmpfs mounts (tests/extras.py; CI runs as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from bundle_support import small  # noqa: E402
from episode_support import write_episode  # noqa: E402
from extras import mount_tmpfs, require, unmount  # noqa: E402
from umask_support import assert_umask_modes, modes_under_umasks  # noqa: E402
from hostile_support import assert_no_temporaries, files_under, one_line_error  # noqa: E402

from pi0viz.analysis.masks import CallMasks, masks_path, save_masks  # noqa: E402
from pi0viz.cli import main  # noqa: E402
from pi0viz.core.bundle import CaptureBundle, load_bundle, save_bundle  # noqa: E402
from pi0viz.errors import BundleError, Pi0vizError, RenderError  # noqa: E402



# -- helpers --------------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), but the filler of a full disk: compared whole before and
    after a failed command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in files_under(root) if p.name != "filler"}


def fill(disk: Path) -> None:
    """Fill the file system of `disk` completely (the filler stays: the disk is full for the command)."""
    with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
        while True:
            f.write(bytes(4096))


def remount_read_only(disk: Path) -> None:
    r = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def disk(tmp_path):
    """A fresh 16 MiB tmpfs (root: CI; locally skipped without root), unmounted afterwards."""
    path = mount_tmpfs(tmp_path / "disk", "size=16m")
    yield path
    unmount(path)


def with_masks(episode: Path) -> Path:
    """Object masks beside every bundle of the episode (so metrics also writes the grounding CSVs)."""
    for bundle in sorted((episode / "bundles").glob("inference_*.npz")):
        if bundle.name.endswith(".masks.npz"):
            continue
        b = load_bundle(bundle)
        cov = np.zeros((1, len(b.camera_names), 16, 16), np.float32)
        cov[0, 0, 2:6, 2:6] = 1.0
        save_masks(CallMasks(list(b.camera_names), ["bowl_1"], cov, np.array([True, True, False])),
                   masks_path(bundle))
    return episode


def break_disk(disk: Path, how: str, victim: Path | None = None) -> str:
    """Make writing under `disk` fail: "full", "read-only", or "folder" (`victim`, a file the command replaces,
    becomes a folder). Returns the cause the one line must name."""
    if how == "full":
        fill(disk)
        return "disk full"
    if how == "read-only":
        remount_read_only(disk)
        return "read-only file system"
    assert victim is not None
    victim.unlink()
    victim.mkdir()
    (victim / "keep").write_text("a folder in the way")
    return "it is a folder"


HOW = ["full", "read-only", "folder"]


# == 1. an output that cannot be written completely never replaces a good one ==================================


@pytest.mark.parametrize("how", HOW)
def test_metrics_keeps_the_whole_old_set(disk, how):
    """metrics writes per call JSON + CSV, then episode_metrics.json: a failure anywhere leaves every one old."""
    episode = with_masks(write_episode(disk / "episode"))
    assert CliRunner().invoke(main, ["metrics", str(episode / "bundles")]).exit_code == 0
    before = snapshot(disk)
    assert sum(n.endswith(".metrics.json") for n in before) == 4 and sum(n.endswith(".csv") for n in before) == 4
    # the third call's JSON is the one in the way: calls 0 and 1 must not be replaced before it fails
    victim = episode / "bundles" / "inference_002.metrics.json"
    cause = break_disk(disk, how, victim)
    if how == "folder":
        before = snapshot(disk)
    line = one_line_error("metrics", episode / "bundles", "--sink-min", "0.5")  # other content than the old set
    assert cause in line and "cannot write" in line
    assert snapshot(disk) == before
    assert_no_temporaries(disk)


@pytest.mark.parametrize("how", HOW)
def test_report_keeps_the_old_page_and_its_run_metrics(disk, how):
    episode = with_masks(write_episode(disk / "run" / "episode_0"))
    assert CliRunner().invoke(main, ["metrics", str(episode / "bundles")]).exit_code == 0
    assert CliRunner().invoke(main, ["report", str(disk / "run")]).exit_code == 0
    assert (disk / "run" / "report.html").is_file() and (disk / "run" / "run_metrics.json").is_file()
    (disk / "run" / "episode_0" / "episode.json").write_text(json.dumps({"task_id": 3, "success": True}))
    cause = break_disk(disk, how, disk / "run" / "run_metrics.json")
    before = snapshot(disk)
    line = one_line_error("report", disk / "run")
    assert cause in line and "cannot write" in line
    assert snapshot(disk) == before
    assert_no_temporaries(disk)


@pytest.mark.parametrize("how", ["full", "read-only"])
@pytest.mark.parametrize("command, name", [("video", "e.mp4"), ("rerun", "e.rrd")])
def test_encoders_keep_the_old_file(tmp_path, disk, how, command, name):
    require("imageio_ffmpeg", "video")
    if command == "rerun":
        require("rerun", "rerun")
    episode = write_episode(tmp_path / "episode")
    out = disk / name
    assert CliRunner().invoke(main, [command, str(episode), "--out", str(out), "--no-progress"]).exit_code == 0
    before = snapshot(disk)
    cause = break_disk(disk, how)
    line = one_line_error(command, episode, "--out", out, "--no-progress", "--layers", "0")
    assert cause in line and str(out) in line
    assert snapshot(disk) == before
    assert_no_temporaries(disk)


@pytest.mark.parametrize("where", ["through a file", "onto a folder"])
@pytest.mark.parametrize("command, name", [("video", "e.mp4"), ("rerun", "e.rrd")])
def test_encoders_over_what_cannot_be_replaced_write_nothing(tmp_path, command, name, where):
    require("imageio_ffmpeg", "video")
    if command == "rerun":
        require("rerun", "rerun")
    episode = write_episode(tmp_path / "episode")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / name).mkdir()
    (tmp_path / name / "keep").write_text("mine")
    before = snapshot(tmp_path)
    out = tmp_path / "afile" / name if where == "through a file" else tmp_path / name
    line = one_line_error(command, episode, "--out", out, "--no-progress")
    assert any(cause in line for cause in ("a part of the path is a file", "it exists and is not a folder",
                                           "it is a folder", "is a directory"))
    assert snapshot(tmp_path) == before
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("how", HOW)
def test_view_keeps_the_old_page_and_its_side_folder(tmp_path, disk, how):
    """The page and its side folder are one output: the folder is swapped in only with the page."""
    episode = write_episode(tmp_path / "episode")
    page = disk / "page.html"
    args = ["view", str(episode / "bundles"), "--out", str(page)]
    assert CliRunner().invoke(main, args + ["--fused", "side"]).exit_code == 0, "first page"
    assert (disk / "page_data").is_dir()
    cause = break_disk(disk, how, page)
    before = snapshot(disk)
    line = one_line_error(*args, "--fused", "side", "--heads", "side")
    assert cause in line or (how == "folder" and "is a directory" in line)  # click checks --out's kind first
    assert snapshot(disk) == before
    assert_no_temporaries(disk)


@pytest.mark.parametrize("how", HOW)
def test_render_keeps_old_cells(tmp_path, disk, how):
    bundle = save_bundle(small(), tmp_path / "call.npz")
    out = disk / "tree"
    args = ["render", str(bundle), "--out", str(out), "--no-progress", "--workers", "1", "--steps", "0",
            "--layers", "0"]
    assert CliRunner().invoke(main, args).exit_code == 0
    cells = sorted(p for p in files_under(out) if p.suffix == ".jpg")
    cause = break_disk(disk, how, cells[0])
    before = snapshot(disk)
    line = one_line_error(*args, "--gamma", "0.5")  # other pixels over the same cells
    assert cause in line
    after = snapshot(disk)
    # a cell already rewritten is whole (its JPEG is complete); every other file is the old one
    for name, data in before.items():
        assert name in after and (after[name] == data or after[name].endswith(b"\xff\xd9")), name
    assert_no_temporaries(disk)


def test_view_through_the_api_onto_a_folder_keeps_the_side_folder(tmp_path):
    """write_viewer's page path is a folder: the new side folder must not be swapped in before the page fails."""
    from pi0viz.viewer import write_viewer

    episode = write_episode(tmp_path / "episode")
    bundles = sorted((episode / "bundles").glob("inference_*.npz"))
    write_viewer(bundles[:2], tmp_path / "page.html", fused="side", heads="none")
    side = snapshot(tmp_path / "page_data")
    (tmp_path / "page.html").unlink()
    (tmp_path / "page.html").mkdir()
    with pytest.raises(Pi0vizError, match="it is a folder") as err:
        write_viewer(bundles, tmp_path / "page.html", fused="side", heads="side")
    assert "\n" not in str(err.value)
    assert snapshot(tmp_path / "page_data") == side and not list((tmp_path / "page.html").iterdir())
    assert_no_temporaries(tmp_path)


def test_several_files_replaced_together_fail_before_the_first_rename(tmp_path):
    from pi0viz.core.writes import replace_together
    from pi0viz.errors import OutputError

    for name in ("a.json", "b.csv", "c.json"):
        (tmp_path / name).write_text("old " + name)
    (tmp_path / "c.json").unlink()
    (tmp_path / "c.json").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match=r"c\.json: it is a folder"):
        replace_together([(tmp_path / "a.json", "new"), (tmp_path / "b.csv", "new"), (tmp_path / "c.json", "x")])
    assert snapshot(tmp_path) == before
    assert_no_temporaries(tmp_path)
    assert [p.name for p in replace_together([(tmp_path / "a.json", "1"), (tmp_path / "b.csv", b"2")])] == \
        ["a.json", "b.csv"]
    assert (tmp_path / "a.json").read_text() == "1" and (tmp_path / "b.csv").read_text() == "2"


# == 2. a refused sweep does not poison its folder ============================================================


@pytest.fixture
def no_ray(monkeypatch):
    """run_sweep up to the point where Ray would start: the policy probe passes, `_run` only notes its episodes.
    Returns the list of runs (each the list of episode names it was given)."""
    from pi0viz.sweep import engine

    runs: list[list[str]] = []
    monkeypatch.setattr(engine, "probe_policy_and_cluster", lambda settings, options: None, raising=False)
    def run(settings, options, store, todo, open_store=None):
        if open_store is not None:  # where the real one opens the folder: once Ray runs and the policy answered
            open_store()
        runs.append([k.name for k in todo])

    monkeypatch.setattr(engine, "_run", run)
    return runs


SMALL_SWEEP = ["sweep", "--tasks", "0", "--episodes-per-task", "1", "--max-steps", "5", "--max-calls", "1",
               "--no-video", "--no-grounding"]


@pytest.mark.parametrize("bad", [
    ["--steps", "x"], ["--steps", "5-3"], ["--layers", "-1"], ["--tasks", "10"], ["--tasks", "0,,1"],
    ["--policy", "gpu"], ["--policy", "checkpoint:/nonexistent/ckpt"], ["--suite", "libero_nope"],
    ["--env-workers", "0"], ["--max-in-flight", "0"], ["--episodes-per-task", "100000", "--render"],
], ids=lambda a: " ".join(a))
def test_refused_sweep_leaves_nothing_and_the_corrected_run_starts(tmp_path, no_ray, bad):
    out = tmp_path / "run"
    line = one_line_error(*SMALL_SWEEP, "--out", out, *bad)
    assert "error" in line
    assert not out.exists() or not files_under(out), files_under(out)  # nothing that could block the rerun
    result = CliRunner().invoke(main, [*SMALL_SWEEP, "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert no_ray == [["libero_spatial_t00_e000_s7"]]  # the corrected run started its episode
    assert_no_temporaries(out)


@pytest.mark.parametrize("first", [["--max-steps", "6"], ["--steps", "0"], ["--all-heads"]],
                         ids=lambda a: " ".join(a))
def test_run_stopped_before_its_first_record_does_not_bind_the_folder(tmp_path, monkeypatch, no_ray, first):
    """A run that got as far as run.json and then failed (a policy that does not load in its actor, a cluster
    that went away) finished no episode: the corrected run replaces its run.json instead of refusing."""
    from pi0viz.errors import CheckpointError
    from pi0viz.sweep import engine

    out = tmp_path / "run"

    def fails(settings, options, store, todo, open_store=None):
        (open_store or (lambda: store.open(settings)))()  # the folder was opened, then the env workers failed
        raise CheckpointError("tiny: the env worker failed to load its scene (in the actor)")

    with monkeypatch.context() as m:
        m.setattr(engine, "_run", fails)
        line = one_line_error(*SMALL_SWEEP, "--out", out, *first)
    assert "failed to load" in line and (out / "run.json").is_file()  # written: the run got that far
    result = CliRunner().invoke(main, [*SMALL_SWEEP, "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "finished no episode" in result.output and len(no_ray) == 1
    settings = json.loads((out / "run.json").read_text())
    assert settings["max_steps"] == 5 and settings["all_heads"] is False and settings["steps"] is None


def _record_arrays(key, calls: int = 2) -> dict[str, np.ndarray]:
    from pi0viz.sweep.attention import summarize_call
    from pi0viz.sweep.finish import assemble_record

    call = summarize_call(small())
    outcome = {"key": {"suite": key.suite, "task": key.task, "trial": key.trial, "seed": key.seed},
               "prompt": "task", "success": True, "steps": 30, "calls": calls, "error": None}
    return assemble_record(outcome, {"wall_s": 1.0}, [call] * calls, video=None)


def test_a_folder_with_records_still_refuses_other_settings(tmp_path):
    from pi0viz.errors import ConfigError
    from pi0viz.sweep.plan import SweepSettings, plan_episodes
    from pi0viz.sweep.store import RunStore

    store = RunStore(tmp_path).open(SweepSettings(max_calls=2))
    key = plan_episodes("libero_spatial", [0], 1, seed=7)[0]
    store.write_record(key, _record_arrays(key))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="max_calls differ"):
        RunStore(tmp_path).open(SweepSettings(max_calls=3))
    (tmp_path / "run.json").write_text('{"suite": "libero_spa')  # cut short by a full disk
    with pytest.raises(ConfigError, match="run.json is unreadable") as err:
        RunStore(tmp_path).open(SweepSettings(max_calls=2))
    assert "\n" not in str(err.value)
    assert snapshot(tmp_path)["episodes/" + key.name + ".npz"] == before["episodes/" + key.name + ".npz"]


# == 3. resume verifies the records it trusts =================================================================


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random bytes":
        path.write_bytes(os.urandom(4096))
    else:
        with zipfile.ZipFile(path) as z:
            members = {n[:-4]: np.lib.format.read_array(z.open(n), allow_pickle=False) for n in z.namelist()}
        if how == "missing fused":
            members.pop("fused")
        elif how == "missing meta":
            members.pop("meta")
        elif how == "wrong-shaped fused":
            members["fused"] = members["fused"][..., :-3]  # R disagrees with keys
        elif how == "wrong-rank images":
            members["images"] = members["images"][0]
        elif how == "fewer calls than meta":
            for name in ("fused", "region_mass", "images", "actions"):
                members[name] = members[name][:1]
        elif how == "another episode's meta":
            meta = json.loads(str(members["meta"]))
            meta["key"]["trial"] = 99
            members["meta"] = np.asarray(json.dumps(meta))
        elif how == "another format":
            members["format"] = np.asarray("pi0viz.capture/1")
        with open(path, "wb") as f:
            np.savez(f, **members)


DAMAGE = ["empty", "truncated", "random bytes", "missing fused", "missing meta", "wrong-shaped fused",
          "wrong-rank images", "fewer calls than meta", "another episode's meta", "another format"]


@pytest.mark.parametrize("how", DAMAGE)
def test_resume_redoes_a_damaged_record_and_says_so(tmp_path, no_ray, how):
    from pi0viz.sweep.plan import SweepSettings, plan_episodes
    from pi0viz.sweep.store import RunStore

    out = tmp_path / "run"
    args = [*SMALL_SWEEP, "--episodes-per-task", "2", "--out", str(out)]
    settings = SweepSettings(max_steps=5, max_calls=1, grounding=False)
    store = RunStore(out).open(settings)
    good, bad = plan_episodes("libero_spatial", [0], 2, seed=7)
    store.write_record(good, _record_arrays(good))
    store.write_record(bad, _record_arrays(bad))
    assert store.is_done(bad)
    _damage(store.record_path(bad), how)
    assert not store.is_done(bad) and store.is_done(good)
    problem = store.record_problem(bad)
    assert problem and "\n" not in problem
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"{store.record_path(bad)}: {problem}; redoing the episode" in result.output
    assert "1 already finished, 1 to run" in result.output
    assert no_ray == [[bad.name]]  # the good record is trusted, the damaged one redone
    assert "Traceback" not in result.output


def test_a_record_without_calls_is_trusted(tmp_path):
    """An episode that ended before its first call (an env error) has an outcome-only record: that is whole."""
    from pi0viz.sweep.plan import SweepSettings, plan_episodes
    from pi0viz.sweep.store import RunStore

    store = RunStore(tmp_path).open(SweepSettings())
    key = plan_episodes("libero_spatial", [0], 1, seed=7)[0]
    store.write_record(key, _record_arrays(key, calls=0))
    assert store.is_done(key) and store.record_problem(key) is None


# == 4. an index that names a folder is a non-negative integer ================================================

BAD_STEPS = [1.5, 1.0, np.float64(1.0), np.float32(2.5), True, np.bool_(True), "1", -1, np.int64(-3), 2**40,
             float("nan"), None.__class__]
BAD_IDS = ["1.5", "1.0", "np.float64", "np.float32", "True", "np.bool_", "'1'", "-1", "np.int64(-3)", "2**40",
           "nan", "a type"]


def _call_one_tree(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Call 1's finished tree (one step, one layer) under tmp_path/tree: what 1.5 must not overwrite."""
    b = small()
    out = tmp_path / "tree"
    from pi0viz.render import RenderOptions, render_bundle

    render_bundle(b, out, RenderOptions(workers=1, steps=[0], layers=[0]), inference_step=1)
    return out, snapshot(out)


@pytest.mark.parametrize("step", BAD_STEPS, ids=BAD_IDS)
def test_inference_step_through_the_api_is_refused_and_writes_nothing(tmp_path, step):
    from pi0viz.render import RenderOptions, render_bundle
    from pi0viz.render.visualize import visualize_attention

    out, before = _call_one_tree(tmp_path)
    b = small()
    options = RenderOptions(workers=1, steps=[0], layers=[0], quality=50)
    with pytest.raises(RenderError, match=r"inference_step\) must be an integer in 0\.\.2147483647") as err:
        render_bundle(b, out, options, inference_step=step)
    assert "\n" not in str(err.value)
    with pytest.raises(BundleError, match=r"inference_step must be an integer in 0\.\.2147483647"):
        visualize_attention(b.attention, images=b.images, camera_names=b.camera_names, token_pieces=b.token_pieces,
                            token_mask=b.token_mask, image_masks=b.image_masks,
                            num_state_tokens=b.num_state_tokens, num_action_tokens=b.num_action_tokens,
                            diffusion_times=b.diffusion_times, token_ids=b.token_ids, inference_step=step,
                            out_dir=out, options=options)
    with pytest.raises(BundleError, match=r"inference_step must be an integer"):
        CaptureBundle(**{**{f: getattr(b, f) for f in b.__dataclass_fields__}, "inference_step": step})
    assert snapshot(out) == before  # call 1's tree untouched, no other call's folder
    assert sorted(p.name for p in out.iterdir()) == ["inference_timestep_1"]
    assert_no_temporaries(out)


@pytest.mark.parametrize("value", ["1.5", "-1", "2147483648", "1e3", "one"])
def test_render_inference_step_flag_is_refused_in_one_line(tmp_path, value):
    bundle = save_bundle(small(), tmp_path / "call.npz")
    out = tmp_path / "tree"
    line = one_line_error("render", bundle, "--out", out, "--no-progress", "--workers", "1",
                          f"--inference-step={value}")
    assert "--inference-step" in line or "inference_step" in line or "inference step" in line
    assert not out.exists() or not files_under(out)


@pytest.mark.parametrize("step", [1.5, True, "1", -1, 2**40, np.float64(2.0)], ids=str)
def test_inference_step_request_key_is_refused(step):
    from pi0viz.serving.protocol import INFERENCE_STEP_KEY, split_request

    with pytest.raises(ValueError, match=r"'pi0viz/inference_step' must be an integer in 0\.\.2147483647"):
        split_request({"observation/state": np.zeros(8, np.float32), INFERENCE_STEP_KEY: step})
    assert split_request({INFERENCE_STEP_KEY: np.int64(3)}).inference_step == 3


@pytest.mark.parametrize("index", [1.5, True, "1", -1, np.float32(0.0)], ids=str)
def test_recorder_index_is_refused_and_records_nothing(tmp_path, index):
    from pi0viz.errors import OutputError
    from pi0viz.serving.recorder import CallRecorder

    recorder = CallRecorder(tmp_path / "rec")
    with pytest.raises(OutputError, match="index must be an integer in 0..2147483647"):
        recorder.record(small(), index)
    assert not files_under(tmp_path / "rec") and recorder.next_index() == 0



# == 5. every output gets the umask's mode ====================================================================

_MODES_SCRIPT = r"""
import json, os, sys
os.umask(int(sys.argv[1], 8))  # before anything is imported: the writer reads it once per process
sys.path.insert(0, sys.argv[3])
from pathlib import Path
import numpy as np
from episode_support import write_episode
from bundle_support import small
from pi0viz.analysis.masks import CallMasks, masks_path, save_masks
from pi0viz.analysis.metrics import analyze_bundles
from pi0viz.analysis.report import write_report
from pi0viz.analysis.summaries import episode_strip_from_bundles, write_call_summaries
from pi0viz.core.bundle import load_bundle
from pi0viz.serving.recorder import CallRecorder
from pi0viz.sweep import results
from pi0viz.sweep.attention import summarize_call
from pi0viz.sweep.finish import assemble_record
from pi0viz.sweep.plan import SweepSettings, plan_episodes
from pi0viz.sweep.store import RunStore

out = Path(sys.argv[2])
episode = write_episode(out / "run" / "episode_0")
bundles = sorted((episode / "bundles").glob("inference_*.npz"))
b = load_bundle(bundles[0])
cov = np.zeros((1, len(b.camera_names), 16, 16), np.float32)
cov[0, 0, 2:6, 2:6] = 1.0
save_masks(CallMasks(list(b.camera_names), ["bowl_1"], cov, np.array([True, True, False])), masks_path(bundles[0]))
analyze_bundles([episode / "bundles"])
write_report(out / "run")                                                   # report.html, run_metrics.json
write_call_summaries(b, out / "summaries")                                  # summary JPEG tree
episode_strip_from_bundles(bundles, out / "strip" / "episode_summary.jpg")  # the strip (and its folder)
store = RunStore(out / "sweep").open(SweepSettings())                      # run.json, episodes/
keys = plan_episodes("libero_spatial", [0], 2, seed=7)
store.mark_started(keys[1], "env-0")                                        # the started marker
call = summarize_call(small())
outcome = {"key": dict(suite=keys[0].suite, task=keys[0].task, trial=keys[0].trial, seed=keys[0].seed),
           "prompt": "p", "success": True, "steps": 3, "calls": 1, "error": None}
store.write_record(keys[0], assemble_record(outcome, {}, [call], video=None))
results.write_results(store, keys[:1], SweepSettings())                    # results.json, results.md
recorder = CallRecorder(out / "record")                                     # record/bundles/
recorder.record(small(), recorder.next_index())                             # call_00000.npz
modes = {str(p.relative_to(out)): [p.is_dir(), p.stat().st_mode & 0o777] for p in out.rglob("*")}
print(json.dumps(modes))
"""


def test_outputs_the_writer_test_misses_get_the_umask_mode(tmp_path):
    for mask, modes in modes_under_umasks(_MODES_SCRIPT, tmp_path).items():
        names = set(modes)
        for must in ("run/report.html", "run/run_metrics.json", "run/episode_0/bundles/episode_metrics.json",
                     "strip", "strip/episode_summary.jpg", "sweep/run.json", "sweep/episodes",
                     "sweep/episodes/libero_spatial_t00_e000_s7.npz",
                     "sweep/episodes/libero_spatial_t00_e001_s7.started",
                     "sweep/results.json", "sweep/results.md", "record", "record/bundles",
                     "record/bundles/call_00000.npz"):
            assert must in names, (must, sorted(names))
        assert any(n.startswith("summaries/") and n.endswith(".jpg") for n in names)
        assert_umask_modes(mask, modes)


# == 6. a demo that fails at load leaves no empty output folders ==============================================


def _broken_checkpoint(root: Path, how: str) -> Path:
    root.mkdir(parents=True)
    if how == "params is a file":
        (root / "params").write_text("not a folder")
    elif how == "empty params":
        (root / "params").mkdir()
    elif how == "junk metadata":
        (root / "params").mkdir()
        (root / "params" / "_METADATA").write_text("{not json")
    return root


@pytest.mark.parametrize("policy", [
    ["--checkpoint", "/nonexistent/pi0viz/ckpt"],
    ["--policy", "checkpoint:/nonexistent/pi0viz/ckpt"],
    ["--policy", "lerobot:/nonexistent/pi0viz/lerobot"],
    ["--policy", "gpu"],
    ["--checkpoint", "BROKEN:empty folder"],
    ["--checkpoint", "BROKEN:params is a file"],
    ["--checkpoint", "BROKEN:empty params"],
    ["--checkpoint", "BROKEN:junk metadata"],
    ["--checkpoint", "BROKEN:empty params", "--tokenizer", "JUNK_TOKENIZER"],
], ids=lambda a: " ".join(a))
def test_demo_failing_at_load_leaves_no_empty_folders(tmp_path, policy):
    args = []
    for a in policy:
        if a.startswith("BROKEN:"):
            a = str(_broken_checkpoint(tmp_path / "ckpt", a.removeprefix("BROKEN:")))
        elif a == "JUNK_TOKENIZER":
            (tmp_path / "tok.model").write_bytes(b"\x00not a sentencepiece model")
            a = str(tmp_path / "tok.model")
        args.append(a)
    out = tmp_path / "runs" / "nested" / "demo"
    line = one_line_error("demo", "--calls", "1", "--out", out, *args)
    assert "error" in line
    assert not (tmp_path / "runs").exists()  # neither the demo folder nor the parents this run would have made


def test_demo_failing_at_load_keeps_folders_that_were_there(tmp_path):
    out = tmp_path / "demo"
    (out / "bundles").mkdir(parents=True)  # an earlier, empty bundles folder: not this run's to remove
    (out / "notes.txt").write_text("mine")
    line = one_line_error("demo", "--calls", "1", "--out", out, "--checkpoint", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in line
    assert sorted(p.name for p in out.iterdir()) == ["bundles", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["report", "view"])
def test_page_through_a_file_writes_nothing(tmp_path, command):
    episode = with_masks(write_episode(tmp_path / "run" / "episode_0"))
    assert CliRunner().invoke(main, ["metrics", str(episode / "bundles")]).exit_code == 0
    (tmp_path / "afile").write_text("not a folder")
    before = snapshot(tmp_path)
    source = tmp_path / "run" if command == "report" else episode / "bundles"
    line = one_line_error(command, source, "--out", tmp_path / "afile" / "page.html")
    assert "a part of the path is a file" in line or "not a folder" in line
    assert snapshot(tmp_path) == before
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("how", HOW)
def test_sweep_results_table_keeps_both_old_files(disk, how):
    from pi0viz.sweep import results
    from pi0viz.sweep.plan import SweepSettings, plan_episodes
    from pi0viz.sweep.store import RunStore

    store = RunStore(disk / "run").open(SweepSettings())
    keys = plan_episodes("libero_spatial", [0], 2, seed=7)
    store.write_record(keys[0], _record_arrays(keys[0]))
    results.write_results(store, keys, SweepSettings())
    store.write_record(keys[1], _record_arrays(keys[1]))  # the table would change
    cause = break_disk(disk, how, disk / "run" / "results.md")
    before = snapshot(disk)
    with pytest.raises(Pi0vizError, match=cause) as err:
        results.write_results(store, keys, SweepSettings())
    assert "\n" not in str(err.value)
    assert snapshot(disk) == before
    assert_no_temporaries(disk)


def test_metrics_refused_midway_keeps_the_old_set_and_no_temporaries(tmp_path):
    """The third call has no masks and --require-masks is given: calls 0 and 1 were measured (their temporaries
    written) before the refusal; none of them may replace the old files or stay behind."""
    episode = with_masks(write_episode(tmp_path / "episode"))
    assert CliRunner().invoke(main, ["metrics", str(episode / "bundles")]).exit_code == 0
    (episode / "bundles" / "inference_002.masks.npz").unlink()
    before = snapshot(tmp_path)
    line = one_line_error("metrics", episode / "bundles", "--require-masks", "--sink-min", "0.5")
    assert "no masks at" in line and "inference_002" in line
    assert snapshot(tmp_path) == before
    assert_no_temporaries(tmp_path)
