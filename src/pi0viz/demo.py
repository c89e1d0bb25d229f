"""`pi0viz demo`: pi0 or pi0.5 on real LIBERO frames, end to end, offline: capture -> bundles -> attention_viz
tree -> viewer.

By default it runs reach-tiny (pi0viz.policy.reach_model): a small pi0 that ships with pi0viz, trained on LIBERO
scenes to move the gripper to the object the prompt names, on held-out scenes it never saw. It needs no network,
GPU or download, and its maps show a model that learned where to look; the object masks of each scene are
written next to the bundles, so `pi0viz metrics` measures it. `--untrained` runs the UNTRAINED tiny pi0 (random
weights) on four shipped LIBERO task frames instead: the pipeline alone. `--model pi05` runs the untrained tiny
pi0.5 with openpi's pi05_libero pipeline (10 action tokens, 200 prompt slots). `--checkpoint DIR --tokenizer
PATH` runs a real openpi checkpoint of either model on the LIBERO frames.

`--policy SPEC` names the policy the way every pi0viz command does (pi0viz.policy.spec): `reach-tiny` (the
default), `tiny` (= --untrained), `checkpoint:DIR` (= --checkpoint DIR) or `lerobot:DIR` (a LeRobot pi0 / pi0.5
checkpoint, PyTorch); everything but reach-tiny runs on the LIBERO frames.

Output under --out (default pi0viz_demo/):
    attention_viz/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/fused_attention_on_*.jpg
    bundles/inference_NNN.npz     one capture bundle per call (attention stored as float16)
    bundles/inference_NNN.masks.npz   reach-tiny: the named object's mask on the patch grid (pi0viz metrics)
    viewer.html (+ viewer_data/)  the interactive viewer over the bundles and the tree

`--model pi0-fast` runs the untrained tiny pi0-FAST (random weights) on the LIBERO frames instead (run_fast_demo):
    attention_viz/inference_timestep_N/decode_step_J/layer_L/fused_attention_on_{camera,text,generated}.jpg
    bundles/inference_NNN.npz     one decoding bundle per call (pi0viz.capture/2)
    viewer.html (+ viewer_data/)  the viewer: a decode-step slider, the map over the tokens generated so far
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.writes import new_folders
from pi0viz.errors import Pi0vizError
from pi0viz.policy.libero_frames import LiberoFrame, load_libero_frames
from pi0viz.policy.spec import PolicySpec, PolicySpecError, check_options, parse_policy_spec, require_kinds

MODELS = {"pi0": "pi0_libero", "pi05": "pi05_libero"}  # --model -> named policy config
FAST_MODEL = "pi0-fast"  # --model pi0-fast: the untrained tiny pi0-FAST (run_fast_demo), no policy config yet
MODEL_CHOICES = sorted([*MODELS, FAST_MODEL])
DEMO_KINDS = ("reach-tiny", "tiny", "checkpoint", "lerobot")  # in-process policies the demo can run


def reach_note(bundles: Path | str = "BUNDLES_DIR") -> str:
    """What reach-tiny is, with its held-out figures from its model card."""
    from pi0viz.policy.reach_model import model_card
    from pi0viz.policy.reach_task import DISTINCT_KINDS

    h = model_card()["heldout"]
    best = h["best_cell"]
    return (
        f"Note: this is reach-tiny, pi0viz's small pi0 (0.45 M parameters) trained on LIBERO scenes to move the "
        f"gripper to the object the prompt names. On {h['scenes']} held-out scenes it ends {h['error_cm']:.1f} cm from "
        f"the named object (nearest of the objects {100 * h['nearest']:.0f} % of the time, chance "
        f"{100 * h['chance_nearest']:.0f} %); its action tokens' attention on that object is {best['lift']:.1f}x uniform "
        f"on average at denoising step {best['step']}, layer {best['layer']} (untrained: "
        f"{best['untrained_lift']:.1f}x; the other objects: {best['lift_other']:.1f}x), high in most examples, "
        f"not all.\n"
        f"It knows this one task and {len(DISTINCT_KINDS)} kinds of objects ({', '.join(DISTINCT_KINDS)}); it is "
        f"not a LIBERO policy. --untrained shows random weights; --checkpoint DIR --tokenizer PATH runs a real "
        f"openpi model. More: docs/reach_tiny.md.\n"
        f"Grounding metrics of these calls: pi0viz metrics {bundles} (the masks are next to the bundles)."
    )


def honest_note(model: str = "pi0") -> str:
    """What the untrained tiny demo's maps are (and are not), for the model family shown."""
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
    untrained: bool = False,
    policy: str | PolicySpec | None = None,
    device: str = "cpu",
) -> DemoResult:
    """Run `calls` inference calls (one shipped scene each, cycling) and render them.

    The default model is reach-tiny on its held-out scenes (prompt "reach the <object>"); with `untrained`,
    `model="pi05"` or a checkpoint, the model runs on the shipped LIBERO task frames.

    Args:
        out: output folder (created; existing files of the same names are replaced).
        checkpoint, tokenizer: a real openpi checkpoint of `model` and PaliGemma's tokenizer.
        steps, action_tokens, layers: render selections ("0,3-5,9"; None = all cells).
        workers: render processes (None = all cores).
        viewer: also write viewer.html (when pi0viz.viewer is available).
        echo: where progress lines go.
        model: "pi0" (pi0_libero pipeline) or "pi05" (pi05_libero: pi0.5, 10 action tokens).
        untrained: the untrained tiny model (random weights) instead of reach-tiny.
        policy: a policy spec (reach-tiny, tiny, checkpoint:DIR, lerobot:DIR); `checkpoint` and `untrained` are
            its older spellings (demo_policy_spec).
        device: the torch device of a lerobot:DIR policy.
    """
    from pi0viz.core.fusion import ColorScale
    from pi0viz.core.progress import progress_bar
    from pi0viz.render import RenderJob, RenderOptions, run_job

    seconds: dict[str, float] = {}
    out = Path(out)
    tree, bundle_dir = out / "attention_viz", out / "bundles"
    t0 = time.monotonic()
    # OutputError naming the folder before the slow part (read-only, a path through a file); a policy that does
    # not load removes again the (empty) folders made here
    with new_folders(tree, bundle_dir):
        echo("[1/4] loading the policy (JAX start-up and compilation take a while on CPU) ...")
        spec = demo_policy_spec(policy, checkpoint=checkpoint, model=model, untrained=untrained)
        reach = spec.kind == "reach-tiny"
        policy = _load_policy(spec, tokenizer, model, device)
        scenes = demo_reach_scenes() if reach else [(f, _describe(f), None) for f in load_libero_frames()]
    seconds["load"] = time.monotonic() - t0
    echo(f"      {policy.description} ({seconds['load']:.0f} s)")

    t0 = time.monotonic()
    captured: list[CaptureBundle] = []
    paths: list[Path] = []
    for call in range(calls):
        scene, description, masks = scenes[call % len(scenes)]
        start = time.monotonic()
        result = policy.infer(scene.observation(), return_bundle=True, inference_step=call)
        bundle = result["attention_bundle"]
        paths.append(save_bundle(_compact(bundle), bundle_dir / f"inference_{call:03d}.npz"))
        if masks is not None:
            from pi0viz.analysis.masks import masks_path, save_masks

            save_masks(masks, masks_path(paths[-1]))
        captured.append(bundle)
        echo(f"[2/4] inference call {call + 1}/{calls} on {description}: attention "
             f"{list(bundle.attention.shape)} ({time.monotonic() - start:.1f} s)")
    seconds["infer"] = time.monotonic() - t0

    t0 = time.monotonic()
    # reach-tiny's prompt newline is an attention sink that would set a shared scale: one scale per camera/prompt
    scale = ColorScale(scope="region") if reach else ColorScale()
    options = RenderOptions(steps=steps, action_tokens=action_tokens, layers=layers, workers=workers, scale=scale)
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


def demo_policy_spec(policy: str | PolicySpec | None = None, *, checkpoint: Path | None = None, model: str = "pi0",
                     untrained: bool = False) -> PolicySpec:
    """The demo's policy as a spec: `policy` when given, else its older spellings (--checkpoint DIR ->
    checkpoint:DIR, --untrained -> tiny), else reach-tiny for pi0 and tiny for pi0.5 (reach-tiny is a pi0).

    Raises:
        PolicySpecError (one line) for a bad spec, a spec the demo cannot run (a server), or spellings that
        contradict each other.
    """
    if policy is not None:
        if checkpoint is not None or untrained:
            raise PolicySpecError("--policy replaces --checkpoint and --untrained; give one of them")
        spec = parse_policy_spec(policy)
    elif checkpoint is not None:
        if untrained:
            raise PolicySpecError("--untrained and --checkpoint exclude each other")
        spec = parse_policy_spec(f"checkpoint:{checkpoint}")
    else:
        spec = parse_policy_spec("tiny" if untrained or model != "pi0" else "reach-tiny")
    return require_kinds(spec, DEMO_KINDS, "pi0viz demo")


@dataclasses.dataclass(frozen=True)
class ReachScene:
    """One held-out reach scene with one named object, as the demo runs it."""

    image: np.ndarray  # uint8[224, 224, 3] agentview, as the model sees it
    wrist_image: np.ndarray  # uint8[224, 224, 3] eye in hand (the model does not use it)
    state: np.ndarray  # float64[8]
    prompt: str

    def observation(self) -> dict[str, Any]:
        return {"observation/image": self.image, "observation/wrist_image": self.wrist_image,
                "observation/state": self.state, "prompt": self.prompt}


def demo_reach_scenes() -> list[tuple[ReachScene, str, Any]]:
    """reach-tiny's shipped held-out scenes, each with the most visible object other than the basket named:
    [(scene, description, CallMasks of the named object on the agentview's patch grid)]."""
    from pi0viz.analysis.masks import CallMasks
    from pi0viz.policy.reach_model import heldout_scenes
    from pi0viz.policy.reach_task import prompt_for

    held = heldout_scenes()
    out = []
    for i in range(len(held)):
        candidates = [int(k) for s, k in held.examples if s == i and held.labels[i][k] != "basket"]
        if not candidates:
            continue
        k = max(candidates, key=lambda k: float(held.coverage[i][k, 0].sum()))
        label = held.labels[i][k]
        scene = ReachScene(held.image[i], held.wrist_image[i], held.state[i], prompt_for(label))
        masks = CallMasks(camera_names=["base_0_rgb"], objects=[label],
                          coverage=held.coverage[i][k:k + 1, :1].astype(np.float32), has_mask=np.array([True]))
        out.append((scene, f"a held-out scene ({scene.prompt!r})", masks))
    return out


def _load_policy(spec: PolicySpec, tokenizer: Path | None, model: str = "pi0", device: str = "cpu") -> Any:
    from pi0viz.policy.spec import load_policy

    if model not in MODELS:
        raise PolicySpecError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    return load_policy(spec, config=MODELS[model], tokenizer=tokenizer, device=device)


def fast_note() -> str:
    """What the pi0-FAST demo's maps are (and are not)."""
    return ("Note: this is an UNTRAINED tiny pi0-FAST (random weights, seeded). Its maps show the pipeline (prefill, "
            "greedy decoding with a kv cache, capture -> decoding bundle -> maps), not what a trained pi0-FAST attends "
            "to. For actions decoded from FAST tokens, serve a checkpoint: `pi0viz serve --config pi0_fast_libero` "
            "(README, pi0-FAST as a policy).")


def run_fast_demo(out: Path, *, calls: int = 2, steps: str | None = None, layers: str | None = None,
                  viewer: bool = True, echo: Any = click.echo, seed: int = 0) -> DemoResult:
    """The untrained tiny pi0-FAST (pi0viz.model.pi0_fast, `Pi0FastConfig.tiny()`, random weights from `seed`) on
    the shipped LIBERO frames: `calls` calls, each captured (heads fused, float16), saved as a decoding bundle
    (bundles/inference_NNN.npz, format pi0viz.capture/2) and rendered as the decode_step_J/layer_L tree.

    Inputs as openpi's LIBERO inputs for pi0-FAST: agentview -> base_0_rgb, wrist -> left_wrist_0_rgb, a black
    right wrist that is NOT masked (openpi's FAST policies never mask cameras); the prompt is the bundled
    tokenizer's "Task: ..., State: <bins>;" form with the raw LIBERO state clipped to [-1, 1] (no norm stats: the
    weights are random anyway). With `viewer`, viewer.html shows the calls with a decode-step slider.
    """
    import jax

    from pi0viz.core.capture_options import CaptureOptions
    from pi0viz.core.decode_bundle import save_decode_bundle
    from pi0viz.model.config import Pi0FastConfig
    from pi0viz.model.pi0_fast import FastObservation, decode_bundle_from_output, init_fast_params, sample_tokens
    from pi0viz.policy.tokenizer import PromptTokenizer
    from pi0viz.render import RenderOptions
    from pi0viz.render.decode import render_decode_bundle

    seconds: dict[str, float] = {}
    out = Path(out)
    tree, bundle_dir = out / "attention_viz", out / "bundles"
    t0 = time.monotonic()
    with new_folders(tree, bundle_dir):
        echo("[1/4] building the untrained tiny pi0-FAST (JAX start-up and compilation take a while on CPU) ...")
        config = Pi0FastConfig.tiny()
        params = init_fast_params(config, jax.random.PRNGKey(seed))
        tokenizer = PromptTokenizer.bundled()
        frames = load_libero_frames()
    seconds["load"] = time.monotonic() - t0
    t0 = time.monotonic()
    paths: list[Path] = []
    bundles = []
    T = config.max_token_len
    for call in range(calls):
        frame = frames[call % len(frames)]
        start = time.monotonic()
        base, wrist = frame.image[None], frame.wrist_image[None]
        black = np.zeros_like(base)
        images = np.stack([base, wrist, black], axis=1)  # uint8[1, 3, 224, 224, 3] in image_keys order
        state = np.clip(np.asarray(frame.state, np.float64), -1.0, 1.0)
        ids = tokenizer.encode_prompt_with_state(frame.prompt, state)[:T]
        token_ids = np.zeros((1, T), np.int32)
        token_ids[0, :len(ids)] = ids
        token_mask = np.arange(T)[None] < len(ids)
        obs = FastObservation(
            images={k: images[:, i].astype(np.float32) / 127.5 - 1.0 for i, k in enumerate(config.image_keys)},
            image_masks={k: np.ones((1,), bool) for k in config.image_keys},
            tokenized_prompt=token_ids, tokenized_prompt_mask=token_mask, token_ar_mask=np.zeros((1, T), np.int32))
        result = sample_tokens(params, config, obs, capture=CaptureOptions(fuse_heads=True, dtype="float16"))
        bundle = decode_bundle_from_output(result, config, images=images, token_ids=token_ids, token_mask=token_mask,
                                           token_pieces=tokenizer.pieces(token_ids, token_mask), piece=tokenizer.piece,
                                           prompt=[frame.prompt], inference_step=call)
        paths.append(save_decode_bundle(bundle, bundle_dir / f"inference_{call:03d}.npz"))
        bundles.append(bundle)
        echo(f"[2/4] inference call {call + 1}/{calls} on {_describe(frame)}: {bundle.num_generated} decode steps, "
             f"attention {list(bundle.attention.shape)} ({time.monotonic() - start:.1f} s)")
    seconds["infer"] = time.monotonic() - t0
    t0 = time.monotonic()
    options = RenderOptions(steps=steps, layers=layers)
    for call, bundle in enumerate(bundles):
        summary = render_decode_bundle(bundle, tree, options, inference_step=call)
        echo(f"[3/4] rendering call {call + 1}/{calls}: {summary.files_written} files, "
             f"{summary.bytes_written / 1e6:.1f} MB in {summary.seconds:.1f} s")
    seconds["render"] = time.monotonic() - t0
    page = _write_viewer(paths, tree, out / "viewer.html", echo) if viewer else None
    return DemoResult(out=out, tree=tree, bundles=paths, viewer=page, seconds=seconds)


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
@click.option("--policy", "policy", default=None, metavar="SPEC",
              help="reach-tiny (default), tiny, checkpoint:DIR or lerobot:DIR (the spec every pi0viz command takes).")
@click.option("--model", type=click.Choice(MODEL_CHOICES), default="pi0", show_default=True,
              help="pi0 (openpi's pi0_libero pipeline), pi05 (pi0.5, pi05_libero: 10 action tokens) or pi0-fast "
                   "(the untrained tiny pi0-FAST: decode_step_J/layer_L maps).")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="openpi checkpoint directory of --model (params/ + assets/); default: reach-tiny, the small "
                   "trained pi0 that ships with pi0viz.")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PaliGemma's paligemma_tokenizer.model (use with --checkpoint).")
@click.option("--untrained", is_flag=True,
              help="Run the UNTRAINED tiny model (random weights) on shipped LIBERO task frames instead of reach-tiny.")
@click.option("--device", default="cpu", show_default=True, help="torch device for --policy lerobot:DIR.")
@click.option("--calls", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Inference calls (one shipped scene each, cycling).")
@click.option("--steps", default=None, help="Denoising steps to render, e.g. '0,9' (default all).")
@click.option("--action-tokens", default=None, help="Action tokens to render, e.g. '0-9,49' (default all).")
@click.option("--layers", default=None, help="Layers to render, e.g. '0-3' (default all).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Render processes (default: all cores).")
@click.option("--no-viewer", is_flag=True, help="Skip the viewer page.")
def demo_command(out: Path, policy: str | None, model: str, checkpoint: Path | None, tokenizer: Path | None,
                 untrained: bool, device: str, calls: int,
                 steps: str | None, action_tokens: str | None, layers: str | None, workers: int | None,
                 no_viewer: bool) -> None:
    """Run a pi0 on shipped LIBERO camera frames and render where its action tokens attend.

    Offline by default: reach-tiny, a small pi0 trained to reach the object the prompt names, on held-out scenes.
    --untrained runs random weights (the pipeline alone); --checkpoint DIR --tokenizer PATH a real openpi model.
    """
    from pi0viz.core.selection import parse_intervals

    if model == FAST_MODEL:
        _fast_demo_command(out, policy, checkpoint, tokenizer, untrained, calls, steps, action_tokens, layers,
                           no_viewer)
        return
    chosen = demo_policy_spec(policy, checkpoint=checkpoint, model=model, untrained=untrained)  # one line if bad
    if tokenizer is not None and chosen.kind != "checkpoint":
        raise click.UsageError("--tokenizer goes with --checkpoint (the shipped models use the bundled tokenizer)")
    check_options(chosen, config=MODELS[model])
    for spec, what in ((steps, "--steps"), (action_tokens, "--action-tokens"), (layers, "--layers")):
        try:  # syntax only, before the slow part; which values exist is known once the model ran
            parse_intervals(spec, what)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
    start = time.monotonic()
    try:
        result = run_demo(out, policy=chosen, tokenizer=tokenizer, calls=calls, steps=steps,
                          action_tokens=action_tokens, layers=layers, workers=workers, viewer=not no_viewer,
                          model=model, device=device)
    except Pi0vizError as err:  # selections, checkpoint, bundle, render and output faults: one line, exit 1
        raise click.ClickException(str(err)) from None
    click.echo("")
    if chosen.kind == "reach-tiny":
        click.echo(reach_note(result.out / "bundles"))
    elif chosen.kind == "tiny":
        click.echo(honest_note(model))
    example = _example_cell(result.tree)
    click.echo(f"done in {time.monotonic() - start:.0f} s. Look at:")
    if result.viewer is not None:
        click.echo(f"  viewer (open in a browser, works offline): {result.viewer}")
    click.echo(f"  attention maps: {result.tree}/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/")
    if example is not None:
        click.echo(f"    e.g. {example}")
    click.echo(f"  capture bundles (for pi0viz render / pi0viz view): {result.out / 'bundles'}/")


def _fast_demo_command(out: Path, policy: str | None, checkpoint: Path | None, tokenizer: Path | None,
                       untrained: bool, calls: int, steps: str | None, action_tokens: str | None,
                       layers: str | None, no_viewer: bool) -> None:
    """`pi0viz demo --model pi0-fast`: the untrained tiny pi0-FAST only, for now."""
    from pi0viz.core.selection import parse_intervals

    if policy not in (None, "tiny") or checkpoint is not None or tokenizer is not None:
        raise click.UsageError("--model pi0-fast runs the untrained tiny pi0-FAST only for now (no --policy, "
                               "--checkpoint or --tokenizer)")
    if action_tokens is not None:
        raise click.UsageError("--action-tokens means nothing for pi0-fast: its cells are decode steps (--steps)")
    for spec, what in ((steps, "--steps"), (layers, "--layers")):
        try:
            parse_intervals(spec, what)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
    start = time.monotonic()
    try:
        result = run_fast_demo(out, calls=calls, steps=steps, layers=layers, viewer=not no_viewer)
    except Pi0vizError as err:
        raise click.ClickException(str(err)) from None
    click.echo("")
    click.echo(fast_note())
    click.echo(f"done in {time.monotonic() - start:.0f} s. Look at:")
    if result.viewer is not None:
        click.echo(f"  viewer (open in a browser, works offline): {result.viewer}")
    click.echo(f"  attention maps: {result.tree}/inference_timestep_N/decode_step_J/layer_L/")
    click.echo(f"  decoding bundles (pi0viz.capture/2): {result.out / 'bundles'}/")


def _example_cell(tree: Path) -> Path | None:
    """The first rendered cell folder of the last denoising step (the one that produces the actions)."""
    calls = sorted(tree.glob("inference_timestep_0/diffusion_timestep_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not calls:
        return None
    cells = sorted(calls[-1].glob("action_token_*/layer_*"),
                   key=lambda p: (int(p.parent.name.rsplit("_", 1)[1]), int(p.name.rsplit("_", 1)[1])))
    return cells[0] if cells else None
