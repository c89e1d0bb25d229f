"""The Rerun export, read back with Rerun's own reader (rerun.dataframe) and checked against the bundles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from episode_support import (
    CALL_STEPS,
    HOT,
    NUM_FRAMES,
    hot_call,
    rollout_frames,
)
from PIL import Image
from extras import require

from pi0viz.cli import main
from pi0viz.episode import Selection, call_maps
from pi0viz.episode.source import load_episode

rr = require("rerun", "rerun")


def read_rrd(path: Path) -> dict[str, list[dict]]:
    """entity path -> its rows ({"control_step", "inference_call", component: value}) in control_step order
    (static entities: one row), read back with Rerun's dataframe API."""
    recording = rr.dataframe.load_recording(str(path))
    columns = recording.schema().component_columns()
    static = {c.entity_path for c in columns if c.is_static}
    out: dict[str, list[dict]] = {}
    for entity in sorted({c.entity_path for c in columns}):
        view = recording.view(index="control_step", contents=entity)
        table = (view.select_static() if entity in static else view.select()).read_all()
        names = [n for n in table.schema.names if n.startswith(entity + ":") or n in ("control_step", "inference_call")]
        columns = {n.removeprefix(entity + ":"): table.column(n).to_pylist() for n in names}
        out[entity] = [{k: v[i] for k, v in columns.items()} for i in range(table.num_rows)]
    return out


def _tensor(cell: list[dict]) -> np.ndarray:
    (value,) = cell
    return np.asarray(value["buffer"], np.float32).reshape(value["shape"])


def _image(row: dict) -> np.ndarray:
    if "EncodedImage:blob" in row:
        return np.asarray(Image.open(io.BytesIO(bytes(row["EncodedImage:blob"][0]))).convert("RGB"))
    (fmt,), (buf,) = row["Image:format"], row["Image:buffer"]
    return np.asarray(buf, np.uint8).reshape(fmt["height"], fmt["width"], 3)



def test_logged_values_match_the_bundles(episode_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "episode.rrd"
    result = CliRunner().invoke(main, ["rerun", str(episode_dir), "--out", str(out), "--raw-images", "--steps", "0,1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    log = read_rrd(out)
    frames = rollout_frames()
    for c, cam in enumerate(frames.camera_names):  # every control step's frame, exactly, on both timelines
        rows = log[f"/cameras/{cam}/frame"]
        assert [r["control_step"] for r in rows] == list(range(NUM_FRAMES))
        assert [r["inference_call"] for r in rows] == [max(frames.call_at(s), 0) for s in range(NUM_FRAMES)]
        for s, row in enumerate(rows):
            np.testing.assert_array_equal(_image(row), frames.frames[s, c])
    assert not any("right_wrist" in e for e in log)  # the padded camera slot is never logged
    for step in (0, 1):
        for call in range(len(HOT)):
            want = call_maps(hot_call(call), Selection(step=step))
            for c, cam in enumerate(want.camera_names):
                row = log[f"/cameras/{cam}/step_{step}/heatmap"][call]
                assert (row["control_step"], row["inference_call"]) == (CALL_STEPS[call], call)
                np.testing.assert_array_equal(_tensor(row["Tensor:data"]), want.cameras[c])
                mass = log[f"/mass/step_{step}/{cam}"][call]
                assert mass["Scalars:scalars"] == [pytest.approx(float(want.mass[c]), abs=0)]
            weights = log[f"/prompt/step_{step}/weights"][call]
            np.testing.assert_array_equal(_tensor(weights["BarChart:values"]), want.prompt)
            assert log[f"/mass/step_{step}/prompt"][call]["Scalars:scalars"] == [float(want.mass[-1])]
    # The planted ground truth, read from the file: the last step's hot patch and token of each call.
    for call, (cam, row, col, token) in enumerate(HOT):
        heat = _tensor(log[f"/cameras/{('base_0_rgb', 'left_wrist_0_rgb')[cam]}/step_1/heatmap"][call]["Tensor:data"])
        assert np.unravel_index(heat.argmax(), heat.shape) == (row, col)
        weights = _tensor(log["/prompt/step_1/weights"][call]["BarChart:values"])
        assert int(weights.argmax()) == token
    assert "mean over layers" in log["/selection"][0]["TextDocument:text"][0]


def test_jpeg_overlay_shows_the_hot_patch(episode_dir: Path, tmp_path: Path) -> None:
    from pi0viz.episode.rerun_export import export_rerun

    out = export_rerun(load_episode([episode_dir]), tmp_path / "e.rrd")
    log = read_rrd(out)
    for call, (cam, row, col, _) in enumerate(HOT):
        name = ("base_0_rgb", "left_wrist_0_rgb")[cam]
        overlay = _image(log[f"/cameras/{name}/step_1/overlay"][call]).astype(np.float32).mean(-1)
        patches = overlay.reshape(16, 14, 16, 14)[:, 2:-2, :, 2:-2].mean(axis=(1, 3))
        assert np.unravel_index(patches.argmax(), patches.shape) == (row, col)
    first = _image(log["/cameras/base_0_rgb/frame"][5])  # JPEG: close to, not equal to, the frame
    assert np.abs(first.astype(int) - rollout_frames().frames[5, 0]).max() <= 3
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed into place


def test_rerun_cli_bad_input_is_one_line(episode_dir: Path, tmp_path: Path) -> None:
    for args in (["--out", str(tmp_path / "e.mp4")], ["--steps", "nine"], ["--steps", "7"]):
        result = CliRunner().invoke(main, ["rerun", str(episode_dir), *args, "--no-progress"])
        assert result.exit_code == 1 and result.stderr.startswith("pi0viz rerun: error: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert "not in this capture" in result.stderr  # step 7: the capture has steps 0-1
