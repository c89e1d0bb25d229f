"""`pi0viz view / video / rerun / metrics / report` on the folders pi0viz itself writes: a `pi0viz demo` output
folder and its bundles folder, a LIBERO run of examples/libero/main.py with every output flag at once, and a sweep
folder. Each output is opened and checked (page names the calls, MP4 decodes, .rrd reads back, metrics name the
calls, report lists no padded camera). The demo, the LIBERO run and the sweep are made once per module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from extras import require, require_libero

from pi0viz.analysis.masks import load_masks
from pi0viz.cli import main
from pi0viz.core.bundle import load_bundle
from pi0viz.core.runs import read_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REPLAN = 5  # the LIBERO example's control steps per inference call
LIBERO_CALLS = 2


def _cli(*args: str | Path) -> str:
    """`pi0viz ARGS` in process; asserts exit 0 and returns the output."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# -- the folders ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`pi0viz demo --out DIR` as a user runs it (a subprocess): bundles/ with masks, attention_viz/, viewer.html."""
    out = tmp_path_factory.mktemp("demo") / "pi0viz_demo"
    script = Path(sys.executable).parent / "pi0viz"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pi0viz.cli"]
    proc = subprocess.run([*cmd, "demo", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def libero_run(tmp_path_factory) -> Path:
    """examples/libero/main.py with the tiny pi0 and every output flag at once, one short episode (two calls):
    the run folder (--attention-out) holding libero_spatial_task0_ep0/ and report.html."""
    require_libero()
    from libero_support import load_libero_example

    example = load_libero_example("libero_example_outputs")
    tmp = tmp_path_factory.mktemp("libero")
    args = example.parse_args([
        "--policy", "tiny", "--task-ids", "0", "--num-trials-per-task", "1", "--num-steps-wait", "2",
        "--max-inference-calls", str(LIBERO_CALLS), "--attention-out", str(tmp / "run"),
        "--video-out-path", str(tmp / "videos"), "--fuse-heads", "--workers", "1",
        "--render-steps", "9", "--render-layers", "0", "--render-action-tokens", "0",  # one cell per call: cheap
        "--grounding", "--attention-video", "--summaries", "--viewer", "--rerun", "--save-bundles",
        "--prefix-attention"])  # + each call's observation and prefix attention side files (issue 23)
    [result] = example.eval_libero(args)
    assert result.error is None, result.error
    assert result.rendered_calls == list(range(LIBERO_CALLS))
    return tmp / "run"


@pytest.fixture(scope="module")
def sweep(demo, tmp_path_factory) -> Path:
    """A sweep folder as `pi0viz sweep --save-bundles` leaves it, made without Ray or the simulator from the demo's
    real bundle and masks (call 0, as two calls of one scene) through the sweep's own attention step and store:
    episode 0 saved its bundles (and masks), episode 1 kept only its record."""
    from pi0viz.sweep.attention import summarize_call
    from pi0viz.sweep.finish import assemble_record
    from pi0viz.sweep.plan import SweepSettings, plan_episodes
    from pi0viz.sweep.store import RunStore

    root = tmp_path_factory.mktemp("sweep") / "run"
    settings = SweepSettings(policy="tiny", max_calls=2)
    store = RunStore(root).open(settings)
    keys = plan_episodes("libero_spatial", [0], 2, seed=7)
    first = read_run(demo / "bundles").single_episode("test").calls[0]  # an episode has one prompt: one scene
    for i, key in enumerate(keys):
        summaries = []
        for call in range(2):
            bundle = load_bundle(first.path)
            bundle.inference_step = call
            path = root / "bundles" / key.name / f"inference_{call:03d}.npz" if i == 0 else None
            summaries.append(summarize_call(bundle, bundle_path=path and str(path), masks=load_masks(first.masks)))
        outcome = {"key": {"suite": key.suite, "task": key.task, "trial": key.trial, "seed": key.seed},
                   "prompt": str(bundle.prompt[0]), "success": i == 0, "steps": 10, "calls": 2, "error": None}
        store.write_record(key, assemble_record(outcome, {"wall_s": 1.0}, summaries, video=None))
    return root


def _kinds(request, kind: str) -> tuple[Path, Path, int, int | None]:
    """(input folder, run folder for the report, calls, control steps or None without frames.npz) of a kind."""
    if kind == "demo":
        d = request.getfixturevalue("demo")
        return d, d, 2, None
    if kind == "demo_bundles":
        d = request.getfixturevalue("demo")
        return d / "bundles", d, 2, None
    if kind == "libero_episode":
        r = request.getfixturevalue("libero_run")
        return r / "libero_spatial_task0_ep0", r, LIBERO_CALLS, LIBERO_CALLS * REPLAN
    if kind == "libero_run":
        r = request.getfixturevalue("libero_run")
        return r, r, LIBERO_CALLS, LIBERO_CALLS * REPLAN
    s = request.getfixturevalue("sweep")
    return s, s, 2, None


KINDS = ["demo", "demo_bundles", "libero_episode", "libero_run", "sweep"]


def _padded_cameras(folder: Path) -> set[str]:
    """Camera slots that every call of the episode under `folder` has masked (nothing to draw)."""
    ep = read_run(folder).single_episode("test")
    masks = [load_bundle(p).image_masks[0] for p in ep.bundle_paths]
    names = load_bundle(ep.bundle_paths[0]).camera_names
    return {n for c, n in enumerate(names) if not any(m[c] for m in masks)}


# -- the checks ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_view(kind: str, request, tmp_path: Path) -> None:
    folder, _, calls, _ = _kinds(request, kind)
    page = tmp_path / "view.html"
    out = _cli("view", folder, "--out", page, "--heads", "none")
    assert f"for {calls} call(s)" in out
    text = page.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])
    bundles = read_run(folder).single_episode("test").bundle_paths
    assert [c["source"] for c in meta["calls"]] == [p.name for p in bundles]  # the calls, never a masks file
    assert not any("masks" in c["source"] for c in meta["calls"])


@pytest.mark.parametrize("kind", KINDS)
def test_video(kind: str, request, tmp_path: Path) -> None:
    imageio = require("imageio.v2", "video")
    folder, _, calls, steps = _kinds(request, kind)
    out = tmp_path / "episode.mp4"
    _cli("video", folder, "--out", out, "--no-progress")
    with imageio.get_reader(str(out), format="FFMPEG") as reader:
        frames = [np.asarray(f) for f in reader]
    assert len(frames) == (steps or calls)  # every control step with frames.npz, else one frame per call
    assert frames[0].ndim == 3 and frames[0].std() > 1  # a picture, not a blank


@pytest.mark.parametrize("kind", KINDS)
def test_rerun(kind: str, request, tmp_path: Path) -> None:
    rr = require("rerun", "rerun")
    folder, _, calls, steps = _kinds(request, kind)
    out = tmp_path / "episode.rrd"
    _cli("rerun", folder, "--out", out, "--no-progress")
    recording = rr.dataframe.load_recording(str(out))
    camera = load_bundle(read_run(folder).single_episode("test").bundle_paths[0]).camera_names[0]
    rows = recording.view(index="control_step", contents=f"/cameras/{camera}/frame").select().read_all()
    assert rows.column("control_step").to_pylist() == list(range(steps or calls))
    heatmaps = sorted({c.entity_path for c in recording.schema().component_columns()
                       if c.entity_path.startswith(f"/cameras/{camera}/") and c.entity_path.endswith("/heatmap")})
    assert heatmaps  # one call's heat map per call on the control_step timeline
    rows = recording.view(index="control_step", contents=heatmaps[0]).select().read_all()
    assert rows.num_rows == calls


@pytest.mark.parametrize("kind", KINDS)
def test_metrics_then_report(kind: str, request, tmp_path: Path) -> None:
    folder, run_dir, calls, _ = _kinds(request, kind)
    _cli("metrics", folder, "--no-csv")
    ep = read_run(folder).single_episode("test")
    record = json.loads((ep.bundles_dir / "episode_metrics.json").read_text())
    assert [c["call"] for c in record["calls"]] == list(range(calls))
    assert [c["source"] for c in record["calls"]] == [p.name for p in ep.bundle_paths]
    assert all(c["grounding"] for c in record["calls"])  # the masks next to the bundles were found and used
    padded = _padded_cameras(folder)
    for c in record["calls"]:
        assert not padded & set(c["regions"]["names"]), c["regions"]["names"]

    page = tmp_path / "report.html"
    _cli("report", run_dir, "--out", page)
    text = page.read_text(encoding="utf-8")
    run = json.loads((tmp_path / "run_metrics.json").read_text())
    episodes = 2 if kind == "sweep" else 1  # the sweep's second episode comes from its record alone
    assert f"<p>{episodes} episode(s), {episodes * calls} inference call(s)" in text
    assert run["all"]["episodes"] == episodes
    for name in padded:
        assert name not in text and name not in json.dumps(run)
    if kind == "sweep":
        assert run["all"]["successes"] == 1 and "record (.npz)" in text


def test_libero_example_wrote_every_output(libero_run: Path) -> None:
    """The example's own end-of-episode outputs with all flags at once (they used to stop on the masks files)."""
    imageio = require("imageio.v2", "video")
    rr = require("rerun", "rerun")
    episode = libero_run / "libero_spatial_task0_ep0"
    bundles = episode / "bundles"
    assert sorted(p.name for p in bundles.glob("*.npz")) == [
        f"inference_00{k}.{kind}npz" for k in range(LIBERO_CALLS) for kind in ("masks.", "", "observation.", "prefix.")]
    assert sorted(p.name for p in episode.glob("inference_timestep_*")) == ["inference_timestep_0",
                                                                           "inference_timestep_1"]
    text = (episode / "viewer.html").read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])
    assert [c["source"] for c in meta["calls"]] == ["inference_000.npz", "inference_001.npz"]
    assert [c["prefix"]["source"] for c in meta["calls"]] == ["inference_000.prefix.npz", "inference_001.prefix.npz"]
    with imageio.get_reader(str(episode / "attention_video.mp4"), format="FFMPEG") as reader:
        assert sum(1 for _ in reader) == LIBERO_CALLS * REPLAN
    rows = rr.dataframe.load_recording(str(episode / "episode.rrd")).view(
        index="control_step", contents="/cameras/base_0_rgb/frame").select().read_all()
    assert rows.num_rows == LIBERO_CALLS * REPLAN
    metrics = json.loads((bundles / "episode_metrics.json").read_text())
    assert [c["call"] for c in metrics["calls"]] == [0, 1] and metrics["episode"]["task_id"] == 0
    assert "right_wrist_0_rgb" not in json.dumps(metrics["calls"][0]["regions"])  # LIBERO's padded slot
    assert (episode / "episode_summary.jpg").stat().st_size > 0
    report = (libero_run / "report.html").read_text(encoding="utf-8")
    assert "libero_spatial_task0_ep0" in report and "right_wrist_0_rgb" not in report


@pytest.mark.parametrize("kind", ["demo", "libero_run", "sweep"])
def test_runs_reader_skips_nothing_pi0viz_wrote(kind: str, request) -> None:
    """Every .npz pi0viz writes in these folders is a call or a known side file: nothing is left as unknown, and
    every call found its masks."""
    _, folder, _, _ = _kinds(request, kind)
    run = read_run(folder)
    assert run.skipped == [], run.skipped
    assert run.calls and all(c.masks is not None for c in run.calls)
    if kind == "libero_run":  # --prefix-attention: every saved call has its request and its prefix attention
        assert all(c.observation is not None and c.prefix is not None for c in run.calls)


def _knockout_result() -> dict:
    """A key-set result as `pi0viz knockout --remove ...` writes it (pi0viz.knockout.conditions/1)."""
    cond = {"set": "camera left_wrist_0_rgb", "method": "keys", "route": "all", "layer": None, "camera": None,
            "k": 256, "mean_abs_delta": {"mean": 0.125, "se": 0.01}, "random": {"mean": 0.01, "se": 0.002},
            "ratio": 12.5}
    return {"format": "pi0viz.knockout.conditions/1", "measure": "mean |delta action|", "random_draws": 2,
            "noise_draws": 1, "conditions": [cond, dict(cond, method="pixels", ratio=None, random=None)]}


CAUSAL_COMMANDS = {  # the command's arguments after the input; {out} is a fresh folder
    "view": ["--out", "{out}/view.html", "--heads", "none"],
    "video": ["--out", "{out}/episode.mp4", "--no-progress"],
    "rerun": ["--out", "{out}/episode.rrd", "--no-progress"],
    "metrics": ["--no-csv"],
    "report": ["--out", "{out}/report.html"],
    "render": ["--out", "{out}/tree", "--steps", "9", "--layers", "0", "--action-tokens", "0", "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(CAUSAL_COMMANDS))
def test_every_command_on_an_episode_with_prefix_observation_and_knockouts(libero_run: Path, command: str,
                                                                           tmp_path: Path) -> None:
    """The LIBERO episode with --prefix-attention (NAME.prefix.npz, NAME.observation.npz next to each call) and a
    knockout result in EP/knockouts (with `pi0viz knockout --prefix-attention`'s OUT/prefix.npz and its tree): every
    command works or refuses in one line; view shows both panels, report the knockout table."""
    from pi0viz.causal.cli import write_study
    from pi0viz.core.prefix_bundle import load_prefix, save_prefix
    from pi0viz.render.prefix import render_prefix

    episode = libero_run / "libero_spatial_task0_ep0"
    out = episode / "knockouts"
    if not (out / "knockouts.json").is_file():
        write_study(_knockout_result(), out)
        prefix = load_prefix(episode / "bundles" / "inference_000.prefix.npz")
        save_prefix(prefix, out / "prefix.npz")
        render_prefix(prefix, out, layers=[0], region=8)
    ep = read_run(episode).single_episode("test")
    assert ep.knockouts == [out / "knockouts.json"] and len(ep.calls) == LIBERO_CALLS
    folder = ep.calls[0].path if command == "render" else episode  # render draws one call
    args = [a.format(out=tmp_path) for a in CAUSAL_COMMANDS[command]]
    result = CliRunner().invoke(main, [command, str(folder), *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert command not in ("view", "report"), result.output  # these two must show the new files
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        return
    if command == "view":
        text = (tmp_path / "view.html").read_text(encoding="utf-8")
        meta = json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])
        assert [c["source"] for c in meta["calls"]] == ["inference_000.npz", "inference_001.npz"]
        assert all(c["prefix"]["layers"] for c in meta["calls"])
        assert [k["kind"] for k in meta["knockouts"]] == ["conditions"] and len(meta["knockouts"][0]["rows"]) == 2
    if command == "report":
        text = (tmp_path / "report.html").read_text(encoding="utf-8")
        assert "0.1250 ± 0.0100" in text and "camera left_wrist_0_rgb" in text


# -- the pi0-FAST demo folder (decoding bundles, pi0viz.capture/2) --------------------------------------------------


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory) -> Path:
    """`pi0viz demo --model pi0-fast` as a user runs it (a subprocess), two calls, a few cells rendered."""
    out = tmp_path_factory.mktemp("fast") / "pi0viz_demo"
    script = Path(sys.executable).parent / "pi0viz"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pi0viz.cli"]
    proc = subprocess.run([*cmd, "demo", "--model", "pi0-fast", "--out", str(out), "--steps", "0,1", "--layers", "0"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (out / "viewer.html").is_file() and "viewer.html" in proc.stdout
    return out


FAST_COMMANDS = {  # the command's arguments after the input; {out} is a fresh folder
    "view": ["--out", "{out}/view.html", "--heads", "none"],
    "video": ["--out", "{out}/episode.mp4", "--no-progress"],
    "rerun": ["--out", "{out}/episode.rrd", "--no-progress"],
    "metrics": ["--no-csv"],
    "report": ["--out", "{out}/report.html"],
}


@pytest.mark.parametrize("where", ["demo", "bundles"])
@pytest.mark.parametrize("command", sorted(FAST_COMMANDS))
def test_every_command_works_on_the_pi0_fast_demo_or_refuses_in_one_line(fast_demo: Path, command: str, where: str,
                                                                       tmp_path: Path) -> None:
    folder = fast_demo if where == "demo" else fast_demo / "bundles"
    args = [a.format(out=tmp_path) for a in FAST_COMMANDS[command]]
    result = CliRunner().invoke(main, [command, str(folder), *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:  # a refusal: exit 1 and one line saying what was wrong
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        return
    if command == "view":  # the viewer reads decoding bundles: the page names both calls
        text = (tmp_path / "view.html").read_text(encoding="utf-8")
        meta = json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])
        assert meta["kind"] == "decoding"
        assert [c["source"] for c in meta["calls"]] == ["inference_000.npz", "inference_001.npz"]


def test_render_and_runs_reader_on_the_pi0_fast_demo(fast_demo: Path, tmp_path: Path) -> None:
    run = read_run(fast_demo)
    assert run.skipped == [] and run.kind == "decoding" and len(run.calls) == 2
    assert run.single_episode("test").tree == fast_demo / "attention_viz"
    result = CliRunner().invoke(main, ["render", str(run.calls[1].path), "--out", str(tmp_path), "--steps", "0",
                                       "--layers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    cell = tmp_path / "inference_timestep_1" / "decode_step_0" / "layer_1"
    assert {p.name for p in cell.iterdir()} == {f"fused_attention_on_{n}.jpg" for n in (
        "base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb", "text", "generated")}
