"""`pi0viz render BUNDLE.npz --out attention_viz`: parse flags, call the library, report; no tracebacks for
user mistakes (exit 1 with one line saying what was expected)."""

from __future__ import annotations

import click

from pi0viz.core.colormap import DEFAULT_COLORMAP
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.fusion import SCALE_SCOPES, ColorScale
from pi0viz.errors import Pi0vizError
from pi0viz.render.engine import DEFAULT_QUALITY, RenderJob, RenderOptions, run_job
from pi0viz.render.files import RenderError
from pi0viz.render.panels import DEFAULT_ALPHA, DEFAULT_ZOOM

_SELECTION = "numbers and inclusive ranges, e.g. '0,3-5,9'; a range keeps what the capture holds (default: all)"


@click.command("render")
@click.argument("bundle", type=click.Path())
@click.option("--out", default="attention_viz", show_default=True, type=click.Path(),
              help="Root of the attention_viz tree.")
@click.option("--inference-step", type=int, default=None,
              help="N in inference_timestep_N (default: the bundle's inference_step, else 0).")
@click.option("--steps", default=None,
              help=f"Denoising steps (0 = first, t = 1.0); decode steps for a pi0-FAST bundle: {_SELECTION}.")
@click.option("--action-tokens", default=None, help=f"Action tokens: {_SELECTION}.")
@click.option("--layers", default=None, help=f"Layers: {_SELECTION}.")
@click.option("--cameras", default=None, help="Camera names, comma-separated (default: all unmasked).")
@click.option("--scale", type=click.Choice(SCALE_SCOPES), default="cell", show_default=True,
              help="Color scope: which values share the top of the color scale: a cell's regions, each region, a "
                   "layer, the call (global).")
@click.option("--percentile", type=float, default=None, help="Scale top = this percentile instead of the max.")
@click.option("--gamma", type=float, default=1.0, show_default=True, help="level = (p / top) ** gamma.")
@click.option("--log-decades", type=float, default=None, help="Log color scale spanning this many decades.")
@click.option("--colormap", default=DEFAULT_COLORMAP, show_default=True, help="A matplotlib colormap name.")
@click.option("--zoom", type=click.IntRange(1, 16), default=DEFAULT_ZOOM, show_default=True,
              help="Integer pixels per model-input pixel (patches stay exact pixel blocks): a 14*zoom px block "
                   "per patch.")
@click.option("--bilinear", is_flag=True, help="Interpolate between patch centers instead of flat patch blocks.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=DEFAULT_ALPHA, show_default=True,
              help="Heat-map weight over the image.")
@click.option("--quality", type=click.IntRange(1, 100), default=DEFAULT_QUALITY, show_default=True,
              help="Image quality, 1..100 (JPEG quality).")
@click.option("--per-head", is_flag=True, help="Also write per_head_attention_on_*.jpg (fused map + every head).")
@click.option("--composite", is_flag=True,
              help="Also write composite.jpg per cell: all cameras and the prompt in one labelled image.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes (default: all cores).")
@click.option("--resume", is_flag=True, help="Keep finished cells of an interrupted render; do the rest.")
@click.option("--batch", "--batch-index", "batch_index", type=click.IntRange(0), default=0, show_default=True,
              help="Batch element drawn when a capture holds several (B > 1).")
@click.option("--exclude-sinks", is_flag=True,
              help="Color scale without attention sinks (keys >= 0.2 in 90 % of a step and layer's action rows); "
                   "sinks drawn clipped and outlined.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def render_command(bundle: str, out: str, inference_step: int | None, steps: str | None, action_tokens: str | None,
                   layers: str | None, cameras: str | None, scale: str, percentile: float | None, gamma: float,
                   log_decades: float | None, colormap: str, zoom: int, bilinear: bool, alpha: float, quality: int,
                   per_head: bool, composite: bool, workers: int | None, resume: bool, batch_index: int,
                   exclude_sinks: bool,
                   no_progress: bool) -> None:
    """Render a capture bundle (.npz) as the attention_viz tree of JPEGs.

    OUT/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/fused_attention_on_{camera}.jpg
    and fused_attention_on_text.jpg; D = 0 is the first denoising step (t = 1.0, pure noise). Each caption
    ends with the cell's label: call, step (with t), action token and layer. A pi0-FAST decoding bundle
    (pi0viz.capture/2) gives OUT/inference_timestep_N/decode_step_J/layer_L/fused_attention_on_{camera,text,
    generated}.jpg instead (docs/cli.md lists the flags it takes).
    """
    from pi0viz.core.progress import progress_bar
    from pi0viz.core.runs import load_call

    try:
        capture = load_call(bundle)  # capture/1 -> CaptureBundle, capture/2 -> DecodeBundle
        if isinstance(capture, DecodeBundle):
            _refuse_pi0_only(action_tokens=action_tokens, per_head=per_head, composite=composite, workers=workers,
                             exclude_sinks=exclude_sinks)
        options = RenderOptions(
            steps=steps, action_tokens=action_tokens, layers=layers, cameras=cameras,
            scale=ColorScale(scope=scale, percentile=percentile, gamma=gamma, log_decades=log_decades),
            colormap=colormap, zoom=zoom, upsample="bilinear" if bilinear else "nearest", alpha=alpha,
            quality=quality, per_head=per_head, composite=composite, workers=workers, resume=resume,
            batch_index=batch_index, exclude_sinks=exclude_sinks)
        step = inference_step if inference_step is not None else (capture.inference_step or 0)
        if isinstance(capture, DecodeBundle):
            summary = _render_decoding(capture, out, step, options, no_progress)
            click.echo(str(summary))
            return
        job = RenderJob(capture, out, step, options)
        total = len(job.tasks) * len(job.layer_pos) * job.files_per_cell
        with progress_bar(total, "render", disable=no_progress) as bar:
            summary = run_job(job, progress=bar.update)
    except Pi0vizError as err:  # bundle, selection, scale, output faults: one line, exit 1
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished files are intact; run the same command with --resume to finish", err=True)
        raise SystemExit(130) from None
    click.echo(str(summary))


def _refuse_pi0_only(**given: object) -> None:
    """A decoding bundle has no action tokens, one query per cell and is rendered in one process: the pi0-only
    flags are refused in one line rather than ignored."""
    used = [f"--{name.replace('_', '-')}" for name, value in given.items() if value not in (None, False)]
    if used:
        raise RenderError(f"{', '.join(used)}: pi0 (denoising) flags; a pi0-FAST decoding bundle "
                          "(pi0viz.capture/2) has one query per decode step: use --steps (decode steps), --layers, "
                          "--cameras, --scale and the color, image and --resume flags")


def _render_decoding(capture: DecodeBundle, out: str, step: int, options: RenderOptions,
                     no_progress: bool) -> object:
    """The decode_step_J/layer_L tree of one decoding bundle (render.decode), with a bar over its cells."""
    from pi0viz.core.progress import progress_bar
    from pi0viz.core.selection import parse_selection
    from pi0viz.render.decode import render_decode_bundle

    cells = (len(parse_selection(options.steps, capture.step_indices.tolist(), "decode steps"))
             * len(parse_selection(options.layers, capture.layer_indices.tolist(), "layers")))
    with progress_bar(cells, "render", unit="cell", disable=no_progress) as bar:
        return render_decode_bundle(capture, out, options, inference_step=step, progress=lambda _: bar.update(1))
