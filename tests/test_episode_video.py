"""The attention video: decode the MP4 and find each call's planted hot patch and prompt token in its frames."""

from __future__ import annotations

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
from extras import require

from pi0viz.cli import main
from pi0viz.core.colormap import colormap_lut
from pi0viz.episode import episode_from_bundles, load_frames, save_frames
from pi0viz.episode.compose import FrameComposer
from pi0viz.episode.frames import EpisodeFrames
from pi0viz.errors import EpisodeError
from pi0viz.render.panels import layout_prompt

imageio = require("imageio.v2", "video")
require("imageio_ffmpeg", "video")


def _decode(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        return [np.asarray(f) for f in reader]


def _patch_luma(frame: np.ndarray, cam: int) -> np.ndarray:
    """[16, 16] mean luma of each 14 x 14 patch of camera column `cam` (interior 10 x 10: codec ringing)."""
    block = frame[:224, cam * 224:(cam + 1) * 224].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return block.reshape(16, 14, 16, 14)[:, 2:-2, :, 2:-2].mean(axis=(1, 3))



def test_hot_patch_follows_the_calls_frame_by_frame(episode_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "episode.mp4"
    result = CliRunner().invoke(main, ["video", str(episode_dir), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    frames = _decode(out)
    assert len(frames) == NUM_FRAMES
    for step, frame in enumerate(frames):
        luma = np.stack([_patch_luma(frame, 0), _patch_luma(frame, 1)])  # [2 cameras, 16, 16]
        if step < CALL_STEPS[0]:  # before the first call: the plain rollout frame (its gray level says which)
            assert abs(luma[0].mean() - (60 + 4 * step)) < 4 and luma[0].std() < 2, step
            continue
        call = int(np.searchsorted(CALL_STEPS, step, side="right")) - 1
        cam, row, col, _ = HOT[call]
        assert np.unravel_index(luma.argmax(), luma.shape) == (cam, row, col), (step, call)
        cold = np.delete(luma[cam].reshape(-1), row * 16 + col)
        assert luma[cam, row, col] > cold.max() + 80, step
        # Under the cold patches the frame of THIS control step shows through at 1 - alpha = 0.4.
        assert abs(np.median(luma[0]) - 0.4 * (60 + 4 * step)) < 5, step


def test_hot_prompt_token_is_the_brightest_box(episode_dir: Path, tmp_path: Path) -> None:
    from pi0viz.episode.source import load_episode
    from pi0viz.episode.video import VideoOptions, write_video

    episode = load_episode([episode_dir])
    out = write_video(episode, tmp_path / "e.mp4", VideoOptions(quality=90)).path
    frames = _decode(out)
    pieces = episode.maps[0].prompt_pieces
    layout = layout_prompt(pieces, [True] * len(pieces), width=448)
    composer = FrameComposer(["a", "b"], (224, 224), [pieces], colormap_lut())
    y0 = composer.prompt_origin
    for call, step in enumerate(CALL_STEPS):
        frame = frames[step + 1].astype(np.float32).mean(axis=-1)
        # Box backgrounds: the median of each token box (glyph ink is a minority of its pixels).
        medians = [np.median(frame[y0 + y_0:y0 + y_1, x_0:x_1]) for x_0, y_0, x_1, y_1 in layout.boxes]
        assert int(np.argmax(medians)) == HOT[call][3], call


def test_bundles_only_video_has_one_frame_per_call(episode_dir: Path, tmp_path: Path) -> None:
    bundles = sorted(str(p) for p in (episode_dir / "bundles").glob("*.npz"))
    out = tmp_path / "calls.mp4"
    result = CliRunner().invoke(main, ["video", *bundles, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    frames = _decode(out)
    assert len(frames) == len(HOT)
    for call, frame in enumerate(frames):
        luma = np.stack([_patch_luma(frame, 0), _patch_luma(frame, 1)])
        assert np.unravel_index(luma.argmax(), luma.shape) == HOT[call][:3]


def test_frames_file_round_trip_and_bad_input(tmp_path: Path) -> None:
    frames = rollout_frames()
    path = save_frames(frames, tmp_path / "frames.npz")
    back = load_frames(path)
    np.testing.assert_array_equal(back.frames, frames.frames)
    assert back.camera_names == frames.camera_names and back.call_steps.tolist() == CALL_STEPS
    assert back.call_at(2) == -1 and back.call_at(3) == 0 and back.call_at(22) == 3
    with pytest.raises(EpisodeError, match="increase strictly"):
        EpisodeFrames(frames.frames, frames.camera_names, [5, 5])
    np.savez(tmp_path / "other.npz", frames=frames.frames)
    with pytest.raises(EpisodeError, match="expected format"):
        load_frames(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(EpisodeError, match="not an .npz archive"):
        load_frames(tmp_path / "junk.npz")
    # A bundle from a later call than the frames know of: refused, saying why.
    with pytest.raises(EpisodeError, match="records only 1 call"):
        episode_from_bundles([hot_call(0), hot_call(1)], EpisodeFrames(frames.frames, frames.camera_names, [0]))


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    bad = ([str(tmp_path / "missing")], [str(tmp_path / "junk.npz")], [str(tmp_path)], [str(tmp_path), "--step", "x"])
    for args in bad:
        result = CliRunner().invoke(main, ["video", *args, "--out", str(tmp_path / "x.mp4"), "--no-progress"])
        assert result.exit_code == 1, result.stderr
        assert result.stderr.startswith("pi0viz video: error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_label_names_call_step_t_and_selection(episode_dir: Path) -> None:
    from pi0viz.episode.aggregate import Selection
    from pi0viz.episode.source import load_episode
    from pi0viz.episode.video import VideoOptions, frame_label, iter_frames

    episode = load_episode([episode_dir], Selection(step=0, layers="1", action_tokens="0-1"))
    assert frame_label(episode, 1).startswith("control step 1/22  before the first call")
    label = frame_label(episode, 14)
    assert label == ("control step 14/22  call 2  diffusion step 0 (t=1.00) | "
                     "mean over layers 1 and action tokens 0-1")
    # The label is drawn: below the prompt strip, consecutive frames differ where the step number is written.
    frames = list(iter_frames(episode, VideoOptions()))
    y0 = FrameComposer(["a", "b"], (224, 224), [episode.maps[0].prompt_pieces], colormap_lut()).height - 30
    assert (frames[14][y0:] != frames[15][y0:]).any() and (frames[14][y0:, 200:] == frames[15][y0:, 200:]).all()
