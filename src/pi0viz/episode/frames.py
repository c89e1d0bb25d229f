"""The rollout's camera frames at every control step, and which step each inference call was made at.

A capture bundle holds only what the policy saw at its own call (every 5th control step in LIBERO). To play
attention against the whole rollout, an episode also keeps the frames in between, in one small file:

    <episode>/frames.npz   format "pi0viz.frames/1" (np.savez_compressed, read with allow_pickle=False)

    format        str   []               "pi0viz.frames/1"
    frames        uint8 [steps, C, h, w, 3]  every control step's camera images in the policy's view (LIBERO: rotated
                                         180 degrees, resized with padding to the 224 x 224 model input), so patch
                                         (r, c) of a bundle lands on the same pixels
    camera_names  str   [C]              bundle camera slot of each column, e.g. base_0_rgb, left_wrist_0_rgb
    call_steps    int32 [M]              control step (index into frames) of inference call m = 0..M-1; increasing
    fps           float32 []             playback rate, one control step per video frame (LIBERO example: 10)

Call m's actions run from `call_steps[m]` to `call_steps[m + 1] - 1`, so the video shows call m's attention
over exactly those frames. Sizes: 224 x 224 x 3 x 2 cameras = 301 kB per step raw; zlib leaves about 40% of
that for LIBERO scenes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pi0viz.core.npzfile import NpzReader
from pi0viz.core.writes import atomic_write
from pi0viz.errors import BundleError, EpisodeError

FRAMES_FORMAT = "pi0viz.frames/1"
FRAMES_FILE = "frames.npz"
DEFAULT_FPS = 10.0  # openpi's LIBERO rollout videos play one control step per frame at 10 fps
MAX_FPS = 240.0  # beyond what players and H.264 levels show; larger is a typo, not a wish


def check_fps(fps: float, what: str = "fps") -> float:
    """`fps` as a float in (0, MAX_FPS]; EpisodeError naming `what` otherwise (NaN, infinite, 0, negative)."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise EpisodeError(f"{what} must be a number of frames per second in (0, {MAX_FPS:g}], got {fps!r:.40}") \
            from None
    if not 0 < value <= MAX_FPS:  # also false for NaN
        raise EpisodeError(f"{what} must be in (0, {MAX_FPS:g}] frames per second, got {fps!r:.40}")
    return value


@dataclasses.dataclass
class EpisodeFrames:
    """Frames of one rollout and the control step of each inference call.

    Attributes:
        frames: uint8[steps, C, h, w, 3]: one row per control step, C cameras.
        camera_names: [C] bundle camera slot of each frame column.
        call_steps: int32[M], control step of inference call m (strictly increasing, < N).
        fps: video frames per second (one control step per frame).
    """

    frames: np.ndarray
    camera_names: list[str]
    call_steps: np.ndarray
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        self.camera_names = [str(n) for n in np.asarray(self.camera_names).reshape(-1)]
        self.call_steps = np.asarray(self.call_steps, np.int64).reshape(-1)
        self.fps = check_fps(self.fps, "frames fps")
        self.validate()

    def validate(self) -> None:
        """Raise EpisodeError saying what was expected unless shapes, dtypes and call steps agree."""
        f = self.frames
        if not isinstance(f, np.ndarray) or f.ndim != 5 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise EpisodeError(f"frames must be uint8 [N steps, C cameras, H, W, 3], got "
                               f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
        if f.shape[1] != len(self.camera_names):
            raise EpisodeError(f"frames hold {f.shape[1]} cameras but camera_names lists {len(self.camera_names)}")
        steps = self.call_steps
        if len(steps) and (steps[0] < 0 or steps[-1] >= len(f) or (np.diff(steps) <= 0).any()):
            raise EpisodeError(f"call_steps must increase strictly within 0..{len(f) - 1} (the frames), "
                               f"got {steps.tolist()[:8]}{'...' if len(steps) > 8 else ''}")
        check_fps(self.fps, "frames fps")

    @property
    def num_steps(self) -> int:
        return int(self.frames.shape[0])

    def call_at(self, step: int) -> int:
        """The inference call whose actions run at control step `step` (-1 before the first call)."""
        return int(np.searchsorted(self.call_steps, step, side="right")) - 1


class FrameRecorder:
    """Collects frames in a control loop: `add(images)` every step, `mark_call()` when the policy is queried."""

    def __init__(self, camera_names: Sequence[str], fps: float = DEFAULT_FPS) -> None:
        self.camera_names = list(camera_names)
        self.fps = fps
        self._frames: list[np.ndarray] = []
        self._calls: list[int] = []

    def add(self, images: Sequence[np.ndarray]) -> int:
        """Append one control step's images (one uint8[h, w, 3] per camera); returns that step's index."""
        self._frames.append(np.stack([np.asarray(im, np.uint8) for im in images]))
        return len(self._frames) - 1

    def mark_call(self) -> None:
        """The policy is queried at the step added last."""
        self._calls.append(len(self._frames) - 1)

    def __len__(self) -> int:
        return len(self._frames)

    def result(self) -> EpisodeFrames:
        if not self._frames:
            raise EpisodeError("no frames were recorded: expected at least one control step")
        return EpisodeFrames(np.stack(self._frames), self.camera_names, np.asarray(self._calls), self.fps)


def save_frames(frames: EpisodeFrames, path: str | os.PathLike) -> Path:
    """Write `frames` as a compressed .npz, atomically (a temporary file renamed into place; OutputError if not)."""
    arrays = {"format": np.asarray(FRAMES_FORMAT), "frames": frames.frames,
              "camera_names": np.asarray(frames.camera_names, dtype=str),
              "call_steps": frames.call_steps.astype(np.int32), "fps": np.asarray(frames.fps, np.float32)}
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), durable=True)


def load_frames(path: str | os.PathLike) -> EpisodeFrames:
    """Read a frames file written by `save_frames` (headers checked before any array is allocated, no pickle);
    EpisodeError if it is not one."""
    if not Path(path).is_file():
        raise EpisodeError(f"no frames file at {path}")
    try:
        with NpzReader(path) as z:
            fmt = str(z.load("format")) if "format" in z.headers else ""
            if fmt != FRAMES_FORMAT:
                raise EpisodeError(f"{path}: expected format {FRAMES_FORMAT!r}, got {fmt or 'none'!r}")
            missing = [k for k in ("frames", "camera_names", "call_steps") if k not in z.headers]
            if missing:
                raise EpisodeError(f"{path}: missing key(s) {missing} (see docs/episode.md)")
            arrays = {k: z.load(k) for k in ("frames", "camera_names", "call_steps", "fps") if k in z.headers}
    except BundleError as err:  # the reader's one-line complaint about the archive itself
        raise EpisodeError(str(err)) from None
    if arrays["camera_names"].dtype.kind != "U" or arrays["call_steps"].dtype.kind not in "iu":
        raise EpisodeError(f"{path}: camera_names must be strings and call_steps integers")
    return EpisodeFrames(arrays["frames"], list(arrays["camera_names"]), arrays["call_steps"],
                         float(arrays.get("fps", DEFAULT_FPS)))
