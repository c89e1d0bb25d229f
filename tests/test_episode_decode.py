"""`pi0viz video` and `pi0viz rerun` over an episode of pi0-FAST decoding calls (pi0viz.capture/2): one picture per
call, the mean over its decode steps (or one decode step), read back from the MP4 and the .rrd and checked against
a numpy ground truth built straight from the bundles' aligned kv-cache rows; and the `pi0viz demo --model pi0-fast`
folder through metrics, report, video and rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from extras import require

from pi0viz.cli import main
from pi0viz.core.bundle import save_bundle
from pi0viz.core.decode_bundle import DecodeBundle, save_decode_bundle
from pi0viz.core.synthetic import place_hot_decode_key, synthetic_bundle, synthetic_decode_bundle
from pi0viz.episode import EpisodeFrames, Selection, call_maps, save_frames
from pi0viz.errors import SelectionError

imageio = require("imageio.v2", "video")
require("imageio_ffmpeg", "video")
rr = require("rerun", "rerun")

CAMS = ("base_0_rgb", "left_wrist_0_rgb")
GRID, T, VALID, J, L, HEADS = 16, 16, 6, 5, 2, 2
PPC = GRID * GRID
HOT = [(0, 2, 3, 4), (1, 9, 12, 1), (0, 13, 1, 2)]  # per call: camera, patch row, patch col, prompt token
ONE_STEP = 3  # call 1 also puts its second hot patch on ONE decode step only
ONE_RC = (4, 4)
CALL_STEPS = [2, 6, 10]
NUM_FRAMES = 14


def hot_call(call: int) -> DecodeBundle:
    """Every decode step, layer and head of call `call` puts 0.6 on its camera patch and 0.3 on its prompt token."""
    cam, row, col, token = HOT[call]
    b = synthetic_decode_bundle(num_steps=J, num_layers=L, num_heads=HEADS, camera_names=CAMS, num_text_tokens=T,
                                num_valid_text=VALID, seed=call, inference_step=call)
    for j in range(J):
        for layer in range(L):
            for h in range(HEADS):
                place_hot_decode_key(b, step=j, layer=layer, head=h, key=cam * PPC + row * GRID + col, mass=0.6)
                place_hot_decode_key(b, step=j, layer=layer, head=h, key=len(CAMS) * PPC + token, mass=0.3)
    if call == 1:
        for layer in range(L):
            place_hot_decode_key(b, step=ONE_STEP, layer=layer, head=0, key=ONE_RC[0] * GRID + ONE_RC[1], mass=0.65)
    return b


def truth(b: DecodeBundle, steps: list[int]) -> np.ndarray:
    """float32[C, rows, cols] straight from the stored rows: max over heads, slots mapped back to keys through
    key_source by hand, mean over the given decode steps and every layer."""
    rows = b.attention[:, :, 0, 0, :, 0, :].astype(np.float32).max(axis=2)  # [J, L, S] kv-cache slots
    keys = np.zeros(rows.shape[:2] + (b.num_prefix_keys,), np.float32)
    for slot, key in enumerate(b.key_source[0]):
        keys[..., key] = rows[..., slot]
    return keys[steps].mean(axis=(0, 1))[:len(CAMS) * PPC].reshape(len(CAMS), GRID, GRID)


@pytest.fixture(scope="module")
def episode_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fast_episode")
    for call in range(len(HOT)):
        save_decode_bundle(hot_call(call), root / "bundles" / f"inference_{call:03d}.npz")
    steps = np.arange(NUM_FRAMES)
    frames = np.empty((NUM_FRAMES, 2, 224, 224, 3), np.uint8)
    frames[:, 0] = (60 + 4 * steps)[:, None, None, None]
    frames[:, 1] = (160 - 4 * steps)[:, None, None, None]
    save_frames(EpisodeFrames(frames, list(CAMS), CALL_STEPS, fps=10), root / "frames.npz")
    return root


def test_call_maps_are_the_mean_over_decode_steps() -> None:
    b = hot_call(1)
    mean = call_maps(b)
    assert mean.decoding and mean.step == -1 and mean.decode_steps == list(range(J)) and mean.action_tokens == []
    np.testing.assert_allclose(mean.cameras, truth(b, list(range(J))), atol=1e-6)
    one = call_maps(b, Selection(step=ONE_STEP))
    np.testing.assert_allclose(one.cameras, truth(b, [ONE_STEP]), atol=1e-6)
    assert one.token == f"a{ONE_STEP}" and f'decode step {ONE_STEP} "a{ONE_STEP}"' in one.label()
    assert one.cameras[0][ONE_RC] > 0.6 > mean.cameras[0][ONE_RC]  # one step's patch is diluted in the mean
    assert "decode steps 0-4 (mean)" in mean.label() and "action" not in mean.label()
    assert int(mean.prompt.argmax()) == HOT[1][3]
    row_sum = b.attention[:, :, 0, 0].astype(np.float32).mean(axis=2)[..., 0, :]  # [J, L, S] head mean
    generated = row_sum[..., b.num_prefix_keys:].sum(-1).mean()
    assert mean.generated_mass == pytest.approx(float(generated), abs=1e-6)
    for bad, match in ((Selection(action_tokens="0"), "no action tokens"), (Selection(step=J), "not in this call")):
        with pytest.raises(SelectionError, match=match) as err:
            call_maps(b, bad)
        assert "\n" not in str(err.value)


def test_video_of_decoding_calls_follows_the_hot_patch(episode_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "episode.mp4"
    result = CliRunner().invoke(main, ["video", str(episode_dir), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    with imageio.get_reader(str(out), format="FFMPEG") as reader:
        frames = [np.asarray(f) for f in reader]
    assert len(frames) == NUM_FRAMES
    for step, frame in enumerate(frames):
        luma = np.stack([frame[:224, c * 224:(c + 1) * 224].astype(np.float32).mean(-1)
                         .reshape(16, 14, 16, 14)[:, 2:-2, :, 2:-2].mean(axis=(1, 3)) for c in range(2)])
        if step < CALL_STEPS[0]:
            assert luma[0].std() < 2, step  # before the first call: the plain frame
            continue
        call = int(np.searchsorted(CALL_STEPS, step, side="right")) - 1
        cam, row, col, _ = HOT[call]
        assert np.unravel_index(luma.argmax(), luma.shape) == (cam, row, col), (step, call)
    result = CliRunner().invoke(main, ["video", str(episode_dir), "--out", str(out), "--action-tokens", "0-4",
                                       "--no-progress"])
    assert result.exit_code == 1 and "no action tokens" in result.stderr and result.stderr.count("\n") == 1


def read_rrd(path: Path) -> dict[str, list[dict]]:
    """entity path -> its rows in control_step order, read back with Rerun's dataframe API."""
    recording = rr.dataframe.load_recording(str(path))
    columns = recording.schema().component_columns()
    static = {c.entity_path for c in columns if c.is_static}
    out: dict[str, list[dict]] = {}
    for entity in sorted({c.entity_path for c in columns}):
        view = recording.view(index="control_step", contents=entity)
        table = (view.select_static() if entity in static else view.select()).read_all()
        names = [n for n in table.schema.names if n.startswith(entity + ":") or n in ("control_step", "inference_call")]
        cols = {n.removeprefix(entity + ":"): table.column(n).to_pylist() for n in names}
        out[entity] = [{k: v[i] for k, v in cols.items()} for i in range(table.num_rows)]
    return out


def _tensor(cell: list[dict]) -> np.ndarray:
    (value,) = cell
    return np.asarray(value["buffer"], np.float32).reshape(value["shape"])


def test_rerun_of_decoding_calls(episode_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "episode.rrd"
    result = CliRunner().invoke(main, ["rerun", str(episode_dir), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    log = read_rrd(out)
    assert not any("/step_" in e for e in log)  # no denoising-step subtrees in a decoding recording
    for call in range(len(HOT)):
        b = hot_call(call)
        want = call_maps(b)
        for c, cam in enumerate(CAMS):
            row = log[f"/cameras/{cam}/decode_steps/heatmap"][call]
            assert (row["control_step"], row["inference_call"]) == (CALL_STEPS[call], call)
            np.testing.assert_allclose(_tensor(row["Tensor:data"]), truth(b, list(range(J)))[c], atol=1e-6)
        generated = log["/mass/decode_steps/generated"][call]["Scalars:scalars"]
        assert generated == [pytest.approx(want.generated_mass, abs=1e-9)]
        weights = _tensor(log["/prompt/decode_steps/weights"][call]["BarChart:values"])
        assert int(weights.argmax()) == HOT[call][3]
    assert "decode step" in log["/selection"][0]["TextDocument:text"][0]
    result = CliRunner().invoke(main, ["rerun", str(episode_dir), "--out", str(out), "--steps", f"0,{ONE_STEP}",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    log = read_rrd(out)
    heat = _tensor(log[f"/cameras/{CAMS[0]}/decode_step_{ONE_STEP}/heatmap"][1]["Tensor:data"])
    np.testing.assert_allclose(heat, truth(hot_call(1), [ONE_STEP])[0], atol=1e-6)
    assert f"/cameras/{CAMS[0]}/decode_step_0/heatmap" in log and "/cameras/base_0_rgb/decode_steps/heatmap" not in log


def test_an_episode_of_both_kinds_is_refused(tmp_path: Path) -> None:
    save_decode_bundle(hot_call(0), tmp_path / "bundles" / "inference_000.npz")
    pi0 = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2, num_heads=1)
    pi0.inference_step = 1
    save_bundle(pi0, tmp_path / "bundles" / "inference_001.npz")
    for command, out in (("video", "e.mp4"), ("rerun", "e.rrd")):
        result = CliRunner().invoke(main, [command, str(tmp_path), "--out", str(tmp_path / out), "--no-progress"])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
        assert "decoding" in result.stderr and "denoising" in result.stderr
        assert not list(tmp_path.glob("e.*"))


@pytest.mark.slow
def test_the_pi0_fast_demo_folder_through_metrics_report_video_rerun(tmp_path: Path) -> None:
    require("jax", "jax")
    require("sentencepiece", "jax")
    from pi0viz.demo import run_fast_demo

    demo = run_fast_demo(tmp_path / "demo", calls=2, steps="0", layers="0", echo=lambda line: None).out
    runner = CliRunner()
    for args in (["metrics", str(demo)], ["report", str(demo)],
                 ["video", str(demo), "--out", str(tmp_path / "demo.mp4"), "--no-progress"],
                 ["rerun", str(demo), "--out", str(tmp_path / "demo.rrd"), "--no-progress"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
    assert "every decode step's query" in (demo / "report.html").read_text()
    assert (demo / "bundles" / "inference_001.metrics.json").is_file()
    with imageio.get_reader(str(tmp_path / "demo.mp4"), format="FFMPEG") as reader:
        frames = [np.asarray(f) for f in reader]
    assert len(frames) == 2 and frames[0].shape[1] >= 3 * 224  # one frame per call, three cameras side by side
    log = read_rrd(tmp_path / "demo.rrd")
    rows = log["/cameras/base_0_rgb/decode_steps/heatmap"]
    assert [r["inference_call"] for r in rows] == [0, 1]
    assert _tensor(rows[0]["Tensor:data"]).shape == (16, 16)
    assert len(log["/mass/decode_steps/generated"]) == 2
