"""The attention video: the rollout, one frame per control step, under the current call's attention.

Encoded as H.264 (yuv420p) MP4 with imageio-ffmpeg, which ships its own ffmpeg binary (extra [video]).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Literal

from pi0viz.core.colormap import DEFAULT_COLORMAP, colormap_lut
from pi0viz.core.media_check import check_mp4
from pi0viz.core.writes import replace_verified
from pi0viz.episode.aggregate import spans
from pi0viz.episode.compose import FrameComposer
from pi0viz.episode.frames import check_fps
from pi0viz.episode.source import Episode
from pi0viz.errors import EpisodeError, require

VideoScale = Literal["call", "episode"]
DEFAULT_QUALITY = 80  # 1..100, as every pi0viz --quality; = imageio-ffmpeg's 8 of 0..10: crisp patches, ~60 KB/s


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """How the video looks.

    Attributes:
        scale: "call": each call's maps span 0 .. that call's top (cameras and prompt share it, like a tree
            cell); "episode": one top for the whole episode, so brightness compares across calls.
        colormap: matplotlib colormap name. alpha: heat-map weight over the frame.
        fps: frames per second; None = the frames file's (10 in the LIBERO example; 2 without frames).
        quality: 1..100 (100 = best), the range of every pi0viz --quality; imageio-ffmpeg gets quality / 10.
    """

    scale: VideoScale = "call"
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.6
    fps: float | None = None
    quality: int = DEFAULT_QUALITY

    def validate(self) -> None:
        if self.scale not in ("call", "episode"):
            raise EpisodeError(f"scale must be 'call' or 'episode', got {self.scale!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise EpisodeError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.fps is not None:
            check_fps(self.fps)
        if not 1 <= self.quality <= 100:
            raise EpisodeError(f"quality must be in 1..100, got {self.quality}")


@dataclasses.dataclass
class VideoSummary:
    path: Path
    frames: int
    calls: int
    size: tuple[int, int]
    bytes: int
    seconds: float

    def __str__(self) -> str:
        return (f"wrote {self.path} ({self.frames} frames, {self.calls} calls with attention, "
                f"{self.size[1]}x{self.size[0]} px, {self.bytes / 1e6:.2f} MB) in {self.seconds:.1f} s")


def frame_label(episode: Episode, step: int) -> str:
    """Bottom text of the frame at control step `step` (two lines, split at " | ")."""
    m = episode.frames.call_at(step)
    maps = episode.maps.get(m)
    where = f"control step {step}/{episode.frames.num_steps - 1}"
    if maps is None:
        what = "before the first call" if m < 0 else f"call {m}: no attention captured"
        return f"{where}  {what} | {episode.prompt or ''}"
    if maps.decoding:  # pi0-FAST: decode steps, one query each, and the tokens generated so far as their own group
        generated = "" if maps.generated_mass is None else f"; generated tokens' mass {maps.generated_mass:.3f}"
        return f"{where}  call {maps.call}  {maps.step_words} | mean over layers {spans(maps.layers)}{generated}"
    return (f"{where}  call {maps.call}  diffusion step {maps.step} (t={maps.t:.2f}) | "
            f"mean over layers {spans(maps.layers)} and action tokens {spans(maps.action_tokens)}")


def iter_frames(episode: Episode, options: VideoOptions):
    """Yield uint8[h, w, 3] video frames, one per control step."""
    lut = colormap_lut(options.colormap)  # ColormapError (a Pi0vizError) names the choices
    frames = episode.frames
    names = episode.camera_names
    columns = [frames.camera_names.index(n) for n in names]
    prompts = {tuple(m.prompt_pieces) for m in episode.maps.values()}
    composer = FrameComposer(names, frames.frames.shape[2:4], [list(p) for p in sorted(prompts)], lut,
                             options.alpha)
    episode_top = max((m.top for m in episode.maps.values()), default=0.0)
    for step in range(frames.num_steps):
        maps = episode.maps.get(frames.call_at(step))
        top = 0.0 if maps is None else (episode_top if options.scale == "episode" else maps.top)
        label = frame_label(episode, step)
        if maps is not None:
            label += f"  (scale top {top:.3g})"
        images = {n: frames.frames[step, c] for n, c in zip(names, columns)}
        yield composer.draw(images, maps, top, label)


def check_video_path(path: str | os.PathLike) -> Path:
    """The video's path, which must end in .mp4 (the container ffmpeg is asked for); EpisodeError otherwise."""
    p = Path(path)
    if p.suffix.lower() != ".mp4":
        raise EpisodeError(f"the video must be an .mp4 file, got {str(p)!r:.200} (suffix {p.suffix or 'none'!r})")
    return p


def write_video(episode: Episode, path: str | os.PathLike, options: VideoOptions = VideoOptions(), *,
                progress: Callable[[int], None] | None = None) -> VideoSummary:
    """Encode the episode's attention video to `path` (.mp4), atomically: ffmpeg writes a hidden temporary, which
    replaces `path` only once it reads back as a complete MP4 holding every frame (`core.media_check.check_mp4`).

    Raises:
        OutputError (one line) on a full disk, an unwritable folder or a broken encode; the old `path` is kept.
    """
    options.validate()
    check_video_path(path)
    require("imageio", "video", "the attention video")
    require("imageio_ffmpeg", "video", "the attention video (its ffmpeg)")
    import imageio.v2 as imageio
    t0 = time.perf_counter()
    path = Path(path)
    fps = options.fps or episode.frames.fps
    count, shape = 0, (0, 0)

    def encode(tmp: Path) -> None:
        nonlocal count, shape
        # quality and macro_block_size: frames are already padded to 16 px multiples, so nothing is rescaled.
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=options.quality / 10,
                                pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error") as writer:
            for frame in iter_frames(episode, options):
                writer.append_data(frame)
                count, shape = count + 1, frame.shape[:2]
                if progress:
                    progress(1)

    # ffmpeg reports a full disk on its stderr only and imageio does not check its exit: read the file back.
    path = replace_verified(path, encode, lambda tmp: check_mp4(tmp, frames=count), suffix=".mp4")
    return VideoSummary(path=path, frames=count, calls=len(episode.maps), size=shape, bytes=path.stat().st_size,
                        seconds=time.perf_counter() - t0)
