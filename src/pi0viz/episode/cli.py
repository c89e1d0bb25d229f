"""`pi0viz video` and `pi0viz rerun`: an episode's attention as an MP4 or a Rerun recording. User faults are
Pi0vizErrors (EpisodeError, SelectionError, BundleError, MissingExtraError, ...): the `pi0viz` command prints them
as one line and exits 1."""

from __future__ import annotations

import click

from pi0viz.episode.frames import MAX_FPS
from pi0viz.episode.video import DEFAULT_QUALITY as DEFAULT_VIDEO_QUALITY

_INPUTS = "RUN_DIR_OR_BUNDLES"


def _old_scale(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`--scale` is render's color scope everywhere; the video's choice of top is --scale-over (one-line hint)."""
    if value is not None:
        raise click.UsageError(f"--scale is the color scope of pi0viz render; the video's top of the color scale "
                               f"is --scale-over call|episode (got --scale {value})")


def _selection_options(f):
    f = click.option("--action-tokens", default=None,
                     help="Action tokens averaged, e.g. '0-4'; a range keeps what the capture holds (default: all).")(f)
    f = click.option("--layers", default=None,
                     help="Layers averaged, e.g. '12-17'; a range keeps what the capture holds (default: all).")(f)
    f = click.option("--batch", "--batch-index", "batch_index", type=click.IntRange(0), default=0, show_default=True,
                     help="Batch element drawn when a capture holds several (B > 1).")(f)
    f = click.option("--no-progress", is_flag=True, help="No progress bar.")(f)
    return f


def _load(inputs: tuple[str, ...], steps: str | None, layers: str | None, action_tokens: str | None,
          batch_index: int, no_progress: bool, first_step: int | None = None, command: str = "pi0viz video"):
    from pi0viz.core.progress import progress_bar
    from pi0viz.episode.aggregate import Selection
    from pi0viz.episode.source import find_inputs, load_episode

    selection = Selection(step=first_step, layers=layers, action_tokens=action_tokens, batch_index=batch_index)
    _, bundles = find_inputs(inputs, command)  # the one reader of runs: side files are never calls
    with progress_bar(len(bundles), "calls", unit="call", disable=no_progress) as bar:
        return load_episode(inputs, selection, steps=steps, progress=bar.update, command=command), selection


@click.command("video")
@click.argument("inputs", metavar=_INPUTS, nargs=-1, required=True)
@click.option("--out", default="episode.mp4", show_default=True, type=click.Path(dir_okay=False),
              help="The MP4 to write.")
@click.option("--step", type=click.IntRange(0), default=None,
              help="Denoising step shown (0 = first, t = 1.0; default: the last stored step). pi0-FAST calls: one "
                   "decode step (default: the mean over each call's decode steps).")
@_selection_options
@click.option("--scale-over", "scale_over", type=click.Choice(["call", "episode"]), default="call", show_default=True,
              help="Top of the color scale: each call's own maximum, or one for the whole episode.")
@click.option("--scale", "old_scale", default=None, hidden=True, expose_value=False, callback=_old_scale)
@click.option("--fps", type=click.FloatRange(0, MAX_FPS, min_open=True), default=None,
              help="Frames per second (default: the frames file's, or 2).")
@click.option("--quality", type=click.IntRange(1, 100), default=DEFAULT_VIDEO_QUALITY, show_default=True,
              help="Image quality, 1..100 (H.264 via imageio-ffmpeg, which gets quality / 10).")
@click.option("--colormap", default="inferno", show_default=True, help="A matplotlib colormap name.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Heat-map weight over the frame.")
def video_command(inputs: tuple[str, ...], out: str, step: int | None, layers: str | None, action_tokens: str | None,
                  batch_index: int, no_progress: bool, scale_over: str, fps: float | None, quality: int,
                  colormap: str, alpha: float) -> None:
    """Write the attention video of an episode: every control step's camera frames under the current call's
    attention (mean over action tokens and layers of one denoising step; pi0-FAST: mean over layers and the call's
    decode steps), the prompt and a label.

    RUN_DIR_OR_BUNDLES: an episode folder (frames.npz + bundles/) as examples/libero/main.py writes it, the
    `pi0viz demo` folder, or capture bundle files (then one frame per call, from the bundles' own images).
    """
    from pi0viz.episode.video import VideoOptions, check_video_path, write_video
    from pi0viz.core.progress import progress_bar

    # every option and the output's suffix are checked before any bundle is read (click's ranges let NaN through)
    options = VideoOptions(scale=scale_over, colormap=colormap, alpha=alpha, fps=fps, quality=quality)
    options.validate()
    check_video_path(out)
    episode, _ = _load(inputs, None, layers, action_tokens, batch_index, no_progress, first_step=step)
    with progress_bar(episode.frames.num_steps, "frames", unit="frame", disable=no_progress) as bar:
        summary = write_video(episode, out, options, progress=bar.update)
    click.echo(str(summary))


@click.command("rerun")
@click.argument("inputs", metavar=_INPUTS, nargs=-1, required=True)
@click.option("--out", default="episode.rrd", show_default=True, type=click.Path(dir_okay=False),
              help="The Rerun recording to write.")
@click.option("--steps", default=None,
              help="Denoising steps exported, one entity subtree each, e.g. '0,9' or '5-9'; a range keeps what the "
                   "capture holds (default: the last stored). pi0-FAST calls: decode steps (default: the mean over "
                   "each call's decode steps).")
@_selection_options
@click.option("--quality", "--jpeg-quality", "quality", type=click.IntRange(1, 100), default=90, show_default=True,
              help="Image quality, 1..100 (JPEG quality of frames and overlays in the recording).")
@click.option("--raw-images", is_flag=True, help="Store frames and overlays as raw pixels (larger, exact).")
def rerun_command(inputs: tuple[str, ...], out: str, steps: str | None, layers: str | None, action_tokens: str | None,
                  batch_index: int, no_progress: bool, quality: int, raw_images: bool) -> None:
    """Write an episode's attention as a Rerun recording (.rrd): frames, heat maps, overlays, prompt weights and
    mass per region on control_step / inference_call timelines. Open it with `rerun episode.rrd`.
    """
    from pi0viz.core.selection import parse_intervals
    from pi0viz.episode.rerun_export import RerunOptions, export_rerun
    from pi0viz.errors import EpisodeError

    parse_intervals(steps, "--steps")  # syntax now; which steps exist is read from the first call
    if not out.endswith(".rrd"):
        raise EpisodeError(f"--out must name a .rrd file, got {out!r}")
    episode, selection = _load(inputs, steps, layers, action_tokens, batch_index, no_progress,
                               command="pi0viz rerun")
    path = export_rerun(episode, out, selection=selection,
                        options=RerunOptions(jpeg_quality=None if raw_images else quality))
    size = path.stat().st_size
    click.echo(f"wrote {path} ({size / 1e6:.2f} MB, {len(episode.maps)} calls, {episode.frames.num_steps} "
               f"control steps); open it with: rerun {path}")
