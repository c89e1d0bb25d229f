"""`pi0viz demo`: pi0 or pi0.5 on real LIBERO frames, end to end, offline: capture -> bundles -> attention_viz
tree -> viewer.

By default it runs the UNTRAINED tiny pi0 (random weights, bundled tokenizer), so it needs no network, GPU or
checkpoint; its attention shows the pipeline, not what a trained pi0 looks at. `--model pi05` runs the tiny
pi0.5 with openpi's pi05_libero pipeline (10 action tokens, 200 prompt slots). `--checkpoint DIR --tokenizer
PATH` runs the same thing with a real openpi checkpoint of that model.

Output under --out (default pi0viz_demo/):
    attention_viz/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/fused_attention_on_*.jpg
    bundles/inference_NNN.npz     one capture bundle per call (attention stored as float16)
    viewer.html (+ viewer_data/)  the interactive viewer over the bundles and the tree
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.writes import make_folder
from pi0viz.errors import ConfigError, Pi0vizError
from pi0viz.policy.libero_frames import LiberoFrame, load_frames

MODELS = {"pi0": "pi0_libero", "pi05": "pi05_libero"}  # --model -> named policy config


def honest_note(model: str = "pi0") -> str:
    """What the tiny demo's maps are (and are not), for the model family shown."""
    family = "pi0.5" if model == "pi05" else "pi0"
    return (
        f"Note: this is an UNTRAINED tiny {family} (random weights). Its attention maps show the pipeline (capture -> "
        f"bundle -> maps -> viewer), not what a trained {family} attends to.\n"
        f"For a real model: pi0viz demo {'--model pi05 ' if model == 'pi05' else ''}--checkpoint DIR "
        f"--tokenizer PATH/paligemma_tokenizer.model "
        f"(an openpi {MODELS[model]} checkpoint with params/ and assets/)."
    )


HONEST_NOTE = honest_note("pi0")


@dataclasses.dataclass
class DemoResult:
    """Where the demo wrote things, and how long each stage took (seconds)."""

    out: Path
    tree: Path
    bundles: list[Path]
    viewer: Path | None
    seconds: dict[str, float]


def run_demo(
    out: Path,
    *,
    checkpoint: Path | None = None,
    tokenizer: Path | None = None,
    calls: int = 2,
    steps: str | None = None,
    action_tokens: str | None = None,
    layers: str | None = None,
    workers: int | None = None,
    viewer: bool = True,
    echo: Any = click.echo,
    model: str = "pi0",
) -> DemoResult:
    """Run `calls` inference calls on the shipped LIBERO frames (one scene per call, cycling), render them.

    Args:
        out: output folder (created; existing files of the same names are replaced).
        checkpoint, tokenizer: a real openpi pi0 checkpoint and PaliGemma tokenizer; None = tiny pi0.
        steps, action_tokens, layers: render selections ("0,3-5,9"; None = all cells).
        workers: render processes (None = all cores).
        viewer: also write viewer.html (when pi0viz.viewer is available).
        echo: where progress lines go.
        model: "pi0" (pi0_libero pipeline) or "pi05" (pi05_libero: pi0.5, 10 action tokens).
    """
    from pi0viz.core.progress import progress_bar
    from pi0viz.render import RenderJob, RenderOptions, run_job

    seconds: dict[str, float] = {}
    out = Path(out)
    tree, bundle_dir = out / "attention_viz", out / "bundles"
    make_folder(tree)  # OutputError naming the folder before the slow part (read-only, a path through a file)
    make_folder(bundle_dir)

    t0 = time.monotonic()
    echo("[1/4] loading the policy (JAX start-up and compilation take a while on CPU) ...")
    policy = _load_policy(checkpoint, tokenizer, model)
    frames = load_frames()
    seconds["load"] = time.monotonic() - t0
    echo(f"      {policy.description} ({seconds['load']:.0f} s)")

    t0 = time.monotonic()
    captured: list[CaptureBundle] = []
    paths: list[Path] = []
    for call in range(calls):
        frame = frames[call % len(frames)]
        start = time.monotonic()
        result = policy.infer(frame.observation(), return_bundle=True, inference_step=call)
        bundle = result["attention_bundle"]
        paths.append(save_bundle(_compact(bundle), bundle_dir / f"inference_{call:03d}.npz"))
        captured.append(bundle)
        echo(f"[2/4] inference call {call + 1}/{calls} on {_describe(frame)}: attention "
             f"{list(bundle.attention.shape)} ({time.monotonic() - start:.1f} s)")
    seconds["infer"] = time.monotonic() - t0

    t0 = time.monotonic()
    options = RenderOptions(steps=steps, action_tokens=action_tokens, layers=layers, workers=workers)
    for call, bundle in enumerate(captured):
        job = RenderJob(bundle, str(tree), call, options)
        total = len(job.tasks) * len(job.layer_pos) * job.files_per_cell
        with progress_bar(total, f"[3/4] rendering call {call + 1}/{calls}") as bar:
            summary = run_job(job, progress=bar.update)
        echo(f"      {summary.files_written + summary.files_skipped} files, {summary.bytes_written / 1e6:.0f} MB "
             f"in {summary.seconds:.1f} s")
    seconds["render"] = time.monotonic() - t0

    page = None
    if viewer:
        t0 = time.monotonic()
        page = _write_viewer(paths, tree, out / "viewer.html", echo)
        seconds["viewer"] = time.monotonic() - t0
    return DemoResult(out=out, tree=tree, bundles=paths, viewer=page, seconds=seconds)


def _load_policy(checkpoint: Path | None, tokenizer: Path | None, model: str = "pi0") -> Any:
    from pi0viz.policy.jax_policy import Policy

    if model not in MODELS:
        raise ConfigError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    if checkpoint is None:
        return Policy.tiny(seed=0, policy_config=MODELS[model])
    return Policy.from_checkpoint(checkpoint, policy_config=MODELS[model], tokenizer_path=tokenizer)


def _compact(bundle: CaptureBundle) -> CaptureBundle:
    """float16 attention on disk: half the size, ~3 significant digits for probabilities in [0, 1]."""
    if bundle.attention_kind != "probs" or bundle.attention.dtype == np.float16:
        return bundle
    return dataclasses.replace(bundle, attention=bundle.attention.astype(np.float16))


def _describe(frame: LiberoFrame) -> str:
    return f"{frame.suite} task {frame.task_id} ({frame.prompt!r})"


def _write_viewer(bundles: list[Path], tree: Path, page: Path, echo: Any) -> Path | None:
    try:
        from pi0viz.viewer import write_viewer
    except ImportError:  # the viewer is an optional part of a partial install
        echo("[4/4] viewer not available in this install; skipped")
        return None
    echo("[4/4] writing the viewer ...")
    return write_viewer(bundles, page, tree=tree)


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("pi0viz_demo"),
              show_default=True, help="Output folder.")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="pi0", show_default=True,
              help="pi0 (openpi's pi0_libero pipeline) or pi05 (pi0.5, pi05_libero: 10 action tokens).")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="openpi checkpoint directory of --model (params/ + assets/); default: the untrained tiny model.")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PaliGemma's paligemma_tokenizer.model (use with --checkpoint).")
@click.option("--calls", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Inference calls (one shipped LIBERO scene each, cycling through 4 suites).")
@click.option("--steps", default=None, help="Denoising steps to render, e.g. '0,9' (default all).")
@click.option("--action-tokens", default=None, help="Action tokens to render, e.g. '0-9,49' (default all).")
@click.option("--layers", default=None, help="Layers to render, e.g. '0-3' (default all).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Render processes (default: all cores).")
@click.option("--no-viewer", is_flag=True, help="Skip the viewer page.")
def demo_command(out: Path, model: str, checkpoint: Path | None, tokenizer: Path | None, calls: int, steps: str | None,
                 action_tokens: str | None, layers: str | None, workers: int | None, no_viewer: bool) -> None:
    """Run pi0 or pi0.5 on real LIBERO camera frames (shipped) and render where its action tokens attend.

    Offline by default: the UNTRAINED tiny model and the bundled tokenizer; its maps show the pipeline, not a
    trained model's attention. Point it at a real model with --checkpoint DIR --tokenizer PATH.
    """
    from pi0viz.render import parse_selection

    if tokenizer is not None and checkpoint is None:
        raise click.UsageError("--tokenizer goes with --checkpoint (the tiny pi0 uses its bundled tokenizer)")
    for spec, what in ((steps, "--steps"), (action_tokens, "--action-tokens"), (layers, "--layers")):
        try:  # syntax only, before the slow part; which values exist is known once the model ran
            parse_selection(spec, range(100_000), what)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
    start = time.monotonic()
    try:
        result = run_demo(out, checkpoint=checkpoint, tokenizer=tokenizer, calls=calls, steps=steps,
                          action_tokens=action_tokens, layers=layers, workers=workers, viewer=not no_viewer,
                          model=model)
    except Pi0vizError as err:  # selections, checkpoint, bundle, render and output faults: one line, exit 1
        raise click.ClickException(str(err)) from None
    click.echo("")
    if checkpoint is None:
        click.echo(honest_note(model))
    example = _example_cell(result.tree)
    click.echo(f"done in {time.monotonic() - start:.0f} s. Look at:")
    if result.viewer is not None:
        click.echo(f"  viewer (open in a browser, works offline): {result.viewer}")
    click.echo(f"  attention maps: {result.tree}/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/")
    if example is not None:
        click.echo(f"    e.g. {example}")
    click.echo(f"  capture bundles (for pi0viz render / pi0viz view): {result.out / 'bundles'}/")


def _example_cell(tree: Path) -> Path | None:
    """The first rendered cell folder of the last denoising step (the one that produces the actions)."""
    calls = sorted(tree.glob("inference_timestep_0/diffusion_timestep_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not calls:
        return None
    cells = sorted(calls[-1].glob("action_token_*/layer_*"),
                   key=lambda p: (int(p.parent.name.rsplit("_", 1)[1]), int(p.name.rsplit("_", 1)[1])))
    return cells[0] if cells else None
