"""LIBERO evaluation with attention maps: openpi's examples/libero/main.py loop, plus pi0viz's attention_viz tree.

    bash scripts/install.sh libero                       # once: the LIBERO extra, into .venv
    # a) against a policy server (as openpi runs it; the server may be on a GPU machine):
    pi0viz serve --checkpoint DIR --tokenizer PATH &     # or: pi0viz serve --tiny; pi0.5: add --config pi05_libero
    .venv/bin/python examples/libero/main.py --task-suite-name libero_spatial --tasks 0 --num-trials-per-task 1
    # b) in-process, no server:
    .venv/bin/python examples/libero/main.py --policy tiny --tasks 0 --num-trials-per-task 1 --max-inference-calls 3
    # c) a LeRobot pi0 / pi0.5 checkpoint folder, in PyTorch (docs/torch.md):
    .venv/bin/python examples/libero/main.py --policy lerobot:PATH --device cuda --tasks 0 --num-trials-per-task 1
    # pi0.5 (openpi's pi05_libero pipeline: 10-action chunks), in-process or from a checkpoint:
    .venv/bin/python examples/libero/main.py --policy tiny --config pi05_libero --tasks 0 --max-inference-calls 3
    .venv/bin/python examples/libero/main.py --policy checkpoint:DIR --config pi05_libero --tokenizer PATH ...

Same loop as openpi: per task one env (256 x 256 cameras), per trial reset + benchmark init state, 10 "wait"
steps with the dummy action, then query the policy with the rotated, 224 x 224 images and the 8-d state, execute
the first `replan_steps` = 5 actions of each chunk, until success or the suite's step limit. Rollout videos go to
--video-out-path (rollout_<task>_ep<k>_<success|failure>.mp4, the model-input camera at 10 fps).

Attention: every inference call (or every k-th: --attention-every k) asks the policy for its capture bundle and
renders it with `pi0viz.visualize_attention` into

    <attention-out>/<suite>_task<id>_ep<k>/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/...

where N is the index of the call in the episode. A full pi0 call is 9,000 cells (36,000 JPEGs, ~0.5 GB); for long
runs use --bundles-only (one .npz per call in <episode>/bundles/, render later with `pi0viz render` or browse with
`pi0viz view`), --fuse-heads, the --render-* selections, or --max-inference-calls for quick looks. --viewer writes
<episode>/viewer.html, the interactive viewer over the episode's calls.

Episode views (docs/episode.md; `bash scripts/install.sh video rerun` for imageio-ffmpeg and rerun-sdk):
--attention-video saves every control step's two camera frames (<episode>/frames.npz) and the bundles, and writes
<episode>/attention_video.mp4, the rollout under each call's attention; --rerun logs the episode live into
<episode>/episode.rrd (--rerun-spawn: also to a Rerun viewer spawned on this machine). --episode-step,
--episode-layers and --episode-action-tokens choose what both show (default: last step, all layers and tokens).

--grounding measures where the attention lands (docs/analysis.md): for every call with attention it also saves the
bundle, the simulator's masks of the task's objects in the very frames the policy saw (bundles/*.masks.npz), and
after the episode the metrics (bundles/*.metrics.json, *.grounding.csv, bundles/episode_metrics.json) and
<episode>/episode.json (task, outcome); at the end <attention-out>/report.html over all episodes. --summaries
writes the summary maps (inference_timestep_N/summary/) and <episode>/episode_summary.jpg.

Every saved bundle gets the call's request next to it (bundles/inference_NNN.observation.npz, pi0viz.observation/1:
the robot state a bundle does not hold); --prefix-attention (JAX policies in process) also saves the prefix's own
attention (bundles/inference_NNN.prefix.npz, pi0viz.prefix/1). Then, on the episode folder EP (docs/causal.md):

    pi0viz knockout --policy tiny --bundle EP/bundles/inference_000.npz --remove camera:left_wrist_0_rgb --out EP/knockouts
    pi0viz report EP          # the knockout table and figure
    pi0viz view EP            # the viewer's "prefix" and "knockouts" panels
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.selection import parse_intervals, parse_selection
from pi0viz.errors import ConfigError, SelectionError
from pi0viz.episode import FrameRecorder, Selection, call_maps, save_frames
from pi0viz.policy import libero_env
from pi0viz.policy.spec import PolicySpec, PolicySpecError, check_options, parse_policy_spec

logger = logging.getLogger("libero_example")
VIDEO_FPS = 10
LIBERO_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb")  # openpi's LIBERO inputs: image -> base, wrist_image -> left wrist


@dataclasses.dataclass
class Args:
    """Command-line options (see `--help`)."""

    policy: str = "server"  # a policy spec (pi0viz.policy.spec); "server": ws://--host:--port
    config: str = "pi0_libero"  # named policy config for tiny / checkpoint:DIR (pi05_libero: pi0.5)
    host: str = "127.0.0.1"
    port: int = 8000
    tokenizer: str | None = None  # PaliGemma tokenizer for policy checkpoint:DIR
    fast_tokenizer: str | None = None  # physical-intelligence/fast folder for a pi0-FAST checkpoint:DIR
    device: str = "cpu"  # torch device for policy lerobot:DIR
    resize_size: int = 224
    replan_steps: int = 5
    task_suite_name: str = "libero_spatial"
    task_ids: str | None = None  # --tasks: a selection, e.g. "0,3" or "0-4" (default: every task of the suite)
    num_steps_wait: int = 10
    num_trials_per_task: int = 50
    max_steps: int | None = None  # default: the suite's limit (libero_env.MAX_STEPS)
    seed: int = 7
    video_out_path: str = "data/libero/videos"
    attention: bool = True
    attention_out: str = "attention_viz"
    attention_every: int = 1
    bundles_only: bool = False
    save_bundles: bool = False
    viewer: bool = False
    grounding: bool = False
    summaries: bool = False
    fuse_heads: bool = False
    max_inference_calls: int | None = None
    render_steps: str | None = None
    render_action_tokens: str | None = None
    render_layers: str | None = None
    workers: int | None = None
    attention_video: bool = False
    rerun: bool = False
    rerun_spawn: bool = False
    episode_step: int | None = None
    episode_layers: str | None = None
    episode_action_tokens: str | None = None
    reach: bool = False  # --reach: reach-tiny's task in closed loop (pi0viz.sweep.reach), libero_object's scenes
    prefix_attention: bool = False  # --prefix-attention: NAME.prefix.npz per saved call (JAX policies in process)


@dataclasses.dataclass
class EpisodeResult:
    """One rollout: outcome, how far it got, and where its files went."""

    success: bool
    steps: int
    inference_calls: int
    rendered_calls: list[int]
    episode_dir: Path
    frames: list[np.ndarray] = dataclasses.field(default_factory=list, repr=False)  # model-input agentview
    video: Path | None = None
    attention_video: Path | None = None
    rerun: Path | None = None
    error: str | None = None


class ChunkPolicy(Protocol):
    def infer(self, obs: dict[str, Any], *, return_attention: bool, inference_step: int,
              fuse_heads: bool = False) -> dict[str, Any]: ...


class InProcessPolicy:
    """A policy in this process (tiny, reach-tiny, checkpoint:DIR or lerobot:DIR)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def infer(self, obs: dict[str, Any], *, return_attention: bool, inference_step: int,
              fuse_heads: bool = False) -> dict[str, Any]:
        capture = None
        if return_attention and fuse_heads:
            from pi0viz.serving.server import capture_options  # the policy's own backend's options

            capture = capture_options(self.policy, fuse_heads=True)
        return self.policy.infer(obs, return_bundle=return_attention, inference_step=inference_step, capture=capture)

    def prefix_attention(self, obs: dict[str, Any], *, inference_step: int) -> Any:
        """The prefix's own attention of this request (pi0viz.causal.prefix: the unmodified call's prefix pass,
        which does not depend on the noise): a PrefixAttention. ConfigError (one line) for a policy that is not
        pi0viz's JAX pi0 / pi0.5."""
        from pi0viz.policy.jax_policy import Policy

        if not isinstance(self.policy, Policy):
            raise ConfigError(f"--prefix-attention captures pi0viz's JAX pi0 / pi0.5 (tiny, reach-tiny, "
                              f"checkpoint:DIR); this policy is {type(self.policy).__name__}")
        from pi0viz.causal.prefix import capture_prefix

        return capture_prefix(self.policy, self.policy.prepare(obs), inference_step=inference_step)


class ServerPolicy:
    """A policy server speaking openpi's protocol (pi0viz serve); attention comes back as a rebuilt bundle."""

    def __init__(self, host: str, port: int | None = None) -> None:
        from pi0viz.serving.client import PolicyClient

        self.client = PolicyClient(host, port, connect_timeout=300)
        logger.info("server metadata: %s", self.client.metadata)

    def infer(self, obs: dict[str, Any], *, return_attention: bool, inference_step: int,
              fuse_heads: bool = False) -> dict[str, Any]:
        return self.client.infer(obs, return_attention=return_attention, inference_step=inference_step,
                                 fuse_heads=fuse_heads)

    def prefix_attention(self, obs: dict[str, Any], *, inference_step: int) -> Any:
        raise ConfigError("--prefix-attention captures a JAX policy in this process, not a policy server")


def policy_spec(args: Args) -> PolicySpec:
    """--policy as a policy spec (pi0viz.policy.spec, the parser of every pi0viz command); "server" is
    ws://--host:--port. Raises PolicySpecError (one line) for a bad spec or options that do not go with it."""
    spec = parse_policy_spec(f"ws://{args.host}:{args.port}" if args.policy == "server" else args.policy)
    check_options(spec, config=args.config, tokenizer=args.tokenizer, fast_tokenizer=args.fast_tokenizer)
    return spec


def make_policy(args: Args) -> ChunkPolicy:
    """--policy SPEC -> an object with infer(obs, return_attention, ...): a server client, or the policy in process
    (lerobot:DIR runs in PyTorch and never imports JAX)."""
    spec = policy_spec(args)
    if spec.kind == "server":
        return ServerPolicy(spec.uri or "")
    from pi0viz.policy.spec import load_policy

    return InProcessPolicy(load_policy(spec, config=args.config, tokenizer=args.tokenizer, device=args.device,
                                       fast_tokenizer=args.fast_tokenizer))


def render_call(bundle: CaptureBundle, episode_dir: Path, args: Args, masks: Any = None,
                request: dict[str, Any] | None = None, prefix: Any = None) -> None:
    """Render one call's bundle with pi0viz.visualize_attention (or only save it with --bundles-only); with
    --grounding, save it with the object masks of its frames; with --summaries, write its summary maps. A saved
    bundle gets the call's `request` next to it (NAME.observation.npz: the robot state for `pi0viz knockout
    --bundle`) and, with --prefix-attention, the prefix's own attention (`prefix`, NAME.prefix.npz)."""
    step = int(bundle.inference_step or 0)
    path = episode_dir / "bundles" / f"inference_{step:03d}.npz"
    if isinstance(bundle, DecodeBundle):  # pi0-FAST (--config pi0_fast_libero): a decoding bundle
        render_decode_call(bundle, path, episode_dir, args, request)
        return
    if (args.bundles_only or args.save_bundles or args.viewer or args.attention_video or args.grounding
            or args.summaries or args.prefix_attention):
        save_bundle(bundle, path)
        save_call_side_files(path, request, prefix)
    if masks is not None:
        from pi0viz.analysis.masks import masks_path, save_masks

        save_masks(masks, masks_path(path))
    if args.summaries:
        from pi0viz.analysis.summaries import write_call_summaries

        write_call_summaries(bundle, episode_dir, inference_step=step)
    if args.bundles_only:
        return
    from pi0viz import RenderOptions, visualize_attention

    summary = visualize_attention(
        bundle,  # the whole capture: reduced ones (--fuse-heads, action rows only, prefix keys) render as they are
        inference_step=step,
        out_dir=episode_dir,
        options=RenderOptions(steps=args.render_steps, action_tokens=args.render_action_tokens,
                              layers=args.render_layers, workers=args.workers),
    )
    logger.info("attention of call %d: %d files in %.1f s -> %s", step, summary.files_written, summary.seconds,
                summary.out_dir)


def save_call_side_files(path: Path, request: dict[str, Any] | None, prefix: Any = None) -> None:
    """Next to a saved bundle NAME.npz: NAME.observation.npz (the request, pi0viz.observation/1) and NAME.prefix.npz
    (the prefix's own attention, pi0viz.prefix/1), when given."""
    if request is not None:
        from pi0viz.core.observation_file import observation_path, save_observation

        save_observation(request, observation_path(path))
    if prefix is not None:
        from pi0viz.core.prefix_bundle import prefix_path, save_prefix

        save_prefix(prefix, prefix_path(path))


def render_decode_call(bundle: DecodeBundle, path: Path, episode_dir: Path, args: Args,
                       request: dict[str, Any] | None = None) -> None:
    """pi0-FAST: save the decoding bundle (with --bundles-only, --save-bundles or --viewer) and its request, and
    render its decode_step_J/layer_L tree (pi0viz.render.decode) unless --bundles-only."""
    from pi0viz.core.decode_bundle import save_decode_bundle

    if args.bundles_only or args.save_bundles or args.viewer:
        save_decode_bundle(bundle, path)
        save_call_side_files(path, request)
    if args.bundles_only:
        return
    from pi0viz.render import RenderOptions
    from pi0viz.render.decode import render_decode_bundle

    step = int(bundle.inference_step or 0)
    summary = render_decode_bundle(bundle, episode_dir,
                                   RenderOptions(steps=args.render_steps, layers=args.render_layers),
                                   inference_step=step)
    logger.info("attention of call %d: %d files in %.1f s", step, summary.files_written, summary.seconds)


def run_episode(env: Any, init_state: np.ndarray, prompt: str, policy: ChunkPolicy, args: Args,
                episode_dir: Path, *, max_steps: int, info: dict[str, Any] | None = None,
                reach: tuple[Any, np.ndarray] | None = None) -> EpisodeResult:
    """One rollout in an existing env (reset here). Renders attention as configured; returns the outcome.
    `info` (suite, task, trial) goes into <episode>/episode.json with the outcome (--grounding).
    `reach` = (EpisodeKey, the task's init states): the reach task instead (--reach; `pi0viz.sweep.reach`: the
    key's layout settled, the prompt naming an object in view, success by distance, masks of the named object)."""
    env.reset()
    obs = env.set_init_state(init_state)
    segmenter = None
    if args.grounding:  # after the reset: a hard reset rebuilds the model and its observables
        from pi0viz.analysis.masks import LiberoSegmenter

        segmenter = LiberoSegmenter(env)
    plan: collections.deque = collections.deque()
    frames: list[np.ndarray] = []
    calls, rendered, t, success, error = 0, [], 0, False, None
    recorder, live = _episode_views(args, episode_dir)
    scene = None
    try:
        if reach is not None:  # the settle steps are the wait steps
            from pi0viz.sweep.reach import ReachEpisode

            scene = ReachEpisode(env, reach[1], reach[0], settle=args.num_steps_wait, segmenter=segmenter)
            obs, prompt, t = scene.obs, scene.prompt, args.num_steps_wait
            logger.info("reach: %s (%d objects in view)", prompt, int(scene.present.sum()))
        while t < max_steps + args.num_steps_wait:
            if t < args.num_steps_wait:  # objects are dropped into the scene: let them settle
                obs, _, _, _ = env.step(list(libero_env.DUMMY_ACTION))
                t += 1
                continue
            if not plan and args.max_inference_calls is not None and calls >= args.max_inference_calls:
                logger.info("stopping after %d inference calls (--max-inference-calls)", calls)
                break
            request = libero_env.policy_observation(obs, prompt, size=args.resize_size)
            frames.append(request["observation/image"])
            images = (request["observation/image"], request["observation/wrist_image"])
            if recorder is not None:
                recorder.add(images)
            bundle = None
            if not plan:
                want = args.attention and calls % args.attention_every == 0
                out = policy.infer(request, return_attention=want, inference_step=calls, fuse_heads=args.fuse_heads)
                chunk = np.asarray(out["actions"])
                if len(chunk) < args.replan_steps:
                    raise ValueError(f"replanning every {args.replan_steps} steps needs chunks that long; "
                                     f"the policy returned {len(chunk)} actions")
                plan.extend(chunk[: args.replan_steps])
                if recorder is not None:
                    recorder.mark_call()
                if want:
                    bundle = out["attention_bundle"]
                    masks = segmenter.call_masks(obs) if segmenter is not None else None  # the frames of `request`
                    if scene is not None and masks is not None:  # the named object's mask
                        masks = scene.masks(obs)[0]
                    prefix = policy.prefix_attention(request, inference_step=calls) if args.prefix_attention \
                        else None
                    render_call(bundle, episode_dir, args, masks, request=request, prefix=prefix)
                    rendered.append(calls)
                calls += 1
            if live is not None:  # after the query: this step already runs the new call's actions
                live.frame(len(frames) - 1, calls - 1, dict(zip(LIBERO_CAMERAS, images)))
                if bundle is not None:
                    live.call(len(frames) - 1, [call_maps(bundle, _selection(args), call=calls - 1)])
            obs, _, done, _ = env.step(plan.popleft().tolist())
            if scene is not None:  # success by distance to the named object
                done = scene.step_done(obs)
            if done:
                success = True
                break
            t += 1
    except Exception:  # as openpi: a failing episode is logged and counted as a failure
        error = traceback.format_exc()
        logger.error("episode failed:\n%s", error)
    result = EpisodeResult(success=success, steps=t, inference_calls=calls, rendered_calls=rendered,
                           episode_dir=episode_dir, frames=frames, error=error)
    if live is not None:
        live.close()
        result.rerun = live.path
    if args.viewer and rendered:
        write_episode_viewer(episode_dir, with_tree=not args.bundles_only)
    if args.grounding and rendered:
        write_episode_metrics(episode_dir, dict(info or {}, prompt=prompt, success=success, steps=t,
                                                inference_calls=calls, error=error is not None,
                                                **(scene.outcome() if scene is not None else {})))
    if args.summaries and rendered:
        write_episode_strip(episode_dir)
    if recorder is not None and len(recorder) and rendered:
        result.attention_video = write_attention_video(recorder, episode_dir, args)
    return result


def _selection(args: Args) -> Any:
    return Selection(step=args.episode_step, layers=args.episode_layers, action_tokens=args.episode_action_tokens)


def _episode_views(args: Args, episode_dir: Path) -> tuple[FrameRecorder | None, Any]:
    """A frame recorder (--attention-video) and a live Rerun logger (--rerun), as asked."""
    recorder = FrameRecorder(LIBERO_CAMERAS, fps=VIDEO_FPS) if args.attention_video else None
    live = None
    if args.rerun or args.rerun_spawn:
        from pi0viz.episode.rerun_export import RerunLogger

        live = RerunLogger(episode_dir / "episode.rrd", recording_id=episode_dir.name, selection=_selection(args),
                           spawn=args.rerun_spawn)
    return recorder, live


def write_attention_video(recorder: FrameRecorder, episode_dir: Path, args: Args) -> Path:
    """<episode>/frames.npz and <episode>/attention_video.mp4 from the recorded frames and the saved bundles."""
    from pi0viz.episode.source import load_episode
    from pi0viz.episode.video import write_video as write_mp4

    save_frames(recorder.result(), episode_dir / "frames.npz")
    summary = write_mp4(load_episode([episode_dir], _selection(args)), episode_dir / "attention_video.mp4")
    logger.info("attention video: %s", summary)
    return summary.path


def episode_bundles(episode_dir: Path) -> list[Path]:
    """The episode's saved calls in order, read by pi0viz's one reader of runs (never the masks next to them)."""
    from pi0viz.core.runs import read_run

    return read_run([episode_dir]).single_episode("the LIBERO example").bundle_paths


def write_episode_viewer(episode_dir: Path, *, with_tree: bool) -> Path:
    """The interactive viewer over the episode's bundles (and its JPEG tree): <episode>/viewer.html."""
    from pi0viz.viewer import write_viewer

    bundles = episode_bundles(episode_dir)
    page = write_viewer(bundles, episode_dir / "viewer.html", tree=episode_dir if with_tree else None)
    logger.info("viewer for %d calls: %s", len(bundles), page)
    return page


def write_episode_metrics(episode_dir: Path, info: dict[str, Any]) -> Path:
    """<episode>/episode.json (task, outcome) and the metrics of the episode's saved calls next to its bundles."""
    from pi0viz.analysis.metrics import EPISODE_FILE, analyze_bundles

    episode_dir.mkdir(parents=True, exist_ok=True)
    (episode_dir / EPISODE_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    [path] = analyze_bundles([episode_dir], require_masks=True)
    logger.info("grounding metrics: %s", path)
    return path


def write_episode_strip(episode_dir: Path) -> Path:
    """<episode>/episode_summary.jpg: the whole-call summary map of every saved call, side by side."""
    from pi0viz.analysis.summaries import episode_strip_from_bundles

    path = episode_strip_from_bundles(episode_bundles(episode_dir), episode_dir / "episode_summary.jpg")
    logger.info("episode summary strip: %s", path)
    return path


def write_video(frames: list[np.ndarray], path: Path) -> Path:
    """Frames [T][224, 224, 3] uint8 -> an mp4 (imageio + ffmpeg from the LIBERO extra)."""
    import imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(str(path), [np.asarray(f) for f in frames], fps=VIDEO_FPS)
    return path


def guard_disk(args: Args, num_tasks: int) -> "disk.DiskEstimate":
    """Print the expected disk use of the run; refuse (DiskSpaceError) when the disk cannot hold it.

    The defaults (50 trials per task, every call's full JPEG tree) would write ~0.4 GB per full pi0 call.
    """
    from pi0viz.sweep import disk

    max_steps = args.max_steps or libero_env.MAX_STEPS[args.task_suite_name]
    calls = disk.calls_per_episode(max_steps, args.replan_steps, args.max_inference_calls)
    small = policy_spec(args).kind in ("tiny", "reach-tiny")  # dummy Gemma: 4 layers (reach-tiny: 10 actions)
    shape = disk.CallShape(steps=10, layers=4 if small else 18, action_tokens=50)
    bundle = shape.bundle_bytes(heads=1 if args.fuse_heads else 8)
    # the model's sizes are a guess here: count each selection inside them (never expanded, never refused)
    picks = (("steps", args.render_steps, "--render-steps"), ("layers", args.render_layers, "--render-layers"),
             ("action_tokens", args.render_action_tokens, "--render-action-tokens"))
    selected = {name: parsed.count_within(0, getattr(shape, name))
                for name, sel, flag in picks if (parsed := parse_intervals(sel, flag)) is not None}
    est = disk.estimate(dataclasses.replace(shape, **selected), episodes=num_tasks * args.num_trials_per_task,
                        calls=calls, frames=max_steps, video=True, render=args.attention and not args.bundles_only,
                        render_every=args.attention_every, call_bytes=bundle,
                        records=args.attention and (args.bundles_only or args.save_bundles or args.viewer))
    logger.info("expected disk use: %s", est.describe().replace("records", "bundles"))
    disk.check_free(args.attention_out, est.total, what="this evaluation",
                    hint="--bundles-only, --render-steps/--render-layers/--render-action-tokens, "
                         "--attention-every, fewer --num-trials-per-task, or pi0viz sweep")
    return est


def eval_libero(args: Args) -> list[EpisodeResult]:
    """The evaluation loop over tasks and trials; returns every episode's result."""
    np.random.seed(args.seed)
    check_prefix_option(args)  # before the simulator starts: a refusal costs nothing
    if args.reach:  # reach-tiny's closed-loop task on libero_object's scenes (pi0viz sweep --suite reach)
        from pi0viz.sweep.plan import REACH_MAX_STEPS

        args.task_suite_name = "libero_object"
        args.max_steps = args.max_steps or REACH_MAX_STEPS
    suite = libero_env.task_suite(args.task_suite_name)
    max_steps = args.max_steps or libero_env.MAX_STEPS[args.task_suite_name]
    task_ids = parse_selection(args.task_ids, range(suite.n_tasks), "--tasks", within=args.task_suite_name)
    guard_disk(args, len(task_ids))
    policy = make_policy(args)
    results: list[EpisodeResult] = []
    for task_id in task_ids:
        env, prompt = libero_env.make_env(suite, task_id, seed=args.seed)
        init_states = suite.get_task_init_states(task_id)
        try:
            for trial in range(args.num_trials_per_task):
                logger.info("task %d (%s), trial %d", task_id, prompt, trial)
                episode_dir = Path(args.attention_out) / f"{args.task_suite_name}_task{task_id}_ep{trial}"
                start = time.monotonic()
                result = run_episode(env, init_states[trial % len(init_states)], prompt, policy, args, episode_dir,
                                     max_steps=max_steps,
                                     info={"suite": args.task_suite_name, "task_id": task_id, "trial": trial},
                                     reach=_reach_key(args, task_id, trial, init_states))
                name = f"rollout_{prompt.replace(' ', '_')}_ep{trial}_{'success' if result.success else 'failure'}.mp4"
                if result.frames:
                    result.video = write_video(result.frames, Path(args.video_out_path) / name)
                results.append(result)
                done = sum(r.success for r in results)
                logger.info("success: %s (%d steps, %d calls, %.0f s); so far %d/%d (%.1f%%)", result.success,
                            result.steps, result.inference_calls, time.monotonic() - start, done, len(results),
                            100 * done / len(results))
        finally:
            env.close()
    logger.info("total success rate: %d/%d", sum(r.success for r in results), len(results))
    if args.grounding and any(r.rendered_calls for r in results):
        from pi0viz.analysis.report import write_report

        logger.info("report: %s", write_report(args.attention_out))
    return results


def check_prefix_option(args: Args) -> None:
    """--prefix-attention runs pi0viz's JAX pi0 / pi0.5 prefix capture in this process: ConfigError (one line) for
    any other policy (a server, LeRobot, transformers' PI0, pi0-FAST) or without attention."""
    if not args.prefix_attention:
        return
    from pi0viz.policy.spec import FAST_CONFIG_NAMES

    spec = policy_spec(args)
    if spec.kind not in ("tiny", "reach-tiny", "checkpoint") or args.config in FAST_CONFIG_NAMES:
        raise ConfigError(f"--prefix-attention captures pi0viz's JAX pi0 / pi0.5 in this process (--policy tiny, "
                          f"reach-tiny or checkpoint:DIR, not pi0-FAST); got --policy {spec} --config {args.config}")
    if not args.attention:
        raise ConfigError("--prefix-attention goes with the attention capture: drop --no-attention")


def _reach_key(args: Args, task_id: int, trial: int, init_states: np.ndarray) -> tuple[Any, np.ndarray] | None:
    """--reach: the episode's key (the sweep's reach suite draws the same scene from it) and the init states."""
    if not args.reach:
        return None
    from pi0viz.sweep.plan import REACH_SUITE, EpisodeKey

    return EpisodeKey(REACH_SUITE, task_id, trial, args.seed), init_states


def build_parser() -> argparse.ArgumentParser:
    """The example's flags; a name shared with a `pi0viz` command means the same there (docs/cli.md)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Args()
    p.add_argument("--policy", default=d.policy, metavar="SPEC",
                   help="tiny, reach-tiny, checkpoint:DIR (openpi JAX checkpoint), lerobot:DIR (a LeRobot pi0 / "
                        "pi0.5 checkpoint folder, run with PyTorch) or ws://HOST:PORT (a policy server); 'server' "
                        "connects to --host/--port")
    p.add_argument("--config", default=d.config, help="named policy config for 'tiny' and 'checkpoint:DIR': "
                   "pi0_libero, pi05_libero (pi0.5), pi0_base, pi05_base, pi0_fast_libero (pi0-FAST)")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=_int_in(0, 65535), default=d.port, help="policy server port")
    p.add_argument("--tokenizer", default=None, help="PaliGemma tokenizer model for --policy checkpoint:DIR")
    p.add_argument("--fast-tokenizer", default=None, help="pi0-FAST (--config pi0_fast_libero) checkpoint:DIR: the "
                   "physical-intelligence/fast folder (default: the Hugging Face cache's copy)")
    p.add_argument("--device", default=d.device, help="torch device for --policy lerobot:DIR")
    p.add_argument("--resize-size", type=int, default=d.resize_size)
    p.add_argument("--replan-steps", type=int, default=d.replan_steps)
    p.add_argument("--task-suite-name", default=d.task_suite_name, choices=libero_env.SUITES)
    p.add_argument("--tasks", "--task-ids", dest="task_ids", metavar="TASKS", type=_selection_arg("--tasks"), default=None,
                   help="task ids of the suite, e.g. '0,3' or '0-4' (default: all tasks of the suite)")
    p.add_argument("--num-steps-wait", type=int, default=d.num_steps_wait)
    p.add_argument("--num-trials-per-task", type=int, default=d.num_trials_per_task)
    p.add_argument("--max-steps", type=_int_in(1), default=None, help="default: the suite's limit as in openpi")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=d.seed, help="np.random.seed takes 0..2^32-1")
    p.add_argument("--video-out-path", default=d.video_out_path)
    p.add_argument("--no-attention", dest="attention", action="store_false", help="plain evaluation, no maps")
    p.add_argument("--attention-out", default=d.attention_out, help="root of the per-episode attention_viz trees")
    p.add_argument("--attention-every", type=int, default=d.attention_every, help="only every k-th inference call")
    p.add_argument("--bundles-only", action="store_true", help="save one capture bundle (.npz) per call, no JPEGs")
    p.add_argument("--save-bundles", action="store_true", help="save the bundles next to the JPEG tree too")
    p.add_argument("--viewer", action="store_true",
                   help="write <episode>/viewer.html over the episode's bundles (implies --save-bundles)")
    p.add_argument("--fuse-heads", action="store_true",
                   help="fuse heads by max on the device: 8x smaller bundles, same fused maps, no per-head views")
    p.add_argument("--max-inference-calls", type=int, default=None, help="end each episode after N calls")
    p.add_argument("--render-steps", type=_selection_arg("--render-steps"), default=None,
                   help="denoising steps to render, e.g. '0,9'")
    p.add_argument("--render-action-tokens", type=_selection_arg("--render-action-tokens"), default=None,
                   help="action tokens to render, e.g. '0-4'")
    p.add_argument("--render-layers", type=_selection_arg("--render-layers"), default=None,
                   help="layers to render, e.g. '0,17'")
    p.add_argument("--grounding", action="store_true",
                   help="object masks from the simulator + grounding metrics per call and episode, and a report "
                        "(implies --save-bundles; docs/analysis.md)")
    p.add_argument("--summaries", action="store_true",
                   help="summary maps (mean over action tokens, ...) next to each call's tree and an episode strip "
                        "(implies --save-bundles)")
    p.add_argument("--workers", type=_int_in(1), default=None, help="render processes (default: all cores)")
    p.add_argument("--attention-video", action="store_true",
                   help="save every step's frames and write <episode>/attention_video.mp4 (implies --save-bundles)")
    p.add_argument("--rerun", action="store_true", help="log the episode live into <episode>/episode.rrd")
    p.add_argument("--rerun-spawn", action="store_true", help="--rerun, and stream to a spawned Rerun viewer")
    p.add_argument("--episode-step", type=int, default=None,
                   help="denoising step the video and .rrd show (default: the last)")
    p.add_argument("--episode-layers", type=_selection_arg("--episode-layers"), default=None,
                   help="layers they average, e.g. '12-17' (default: all)")
    p.add_argument("--episode-action-tokens", type=_selection_arg("--episode-action-tokens"), default=None,
                   help="action tokens they average (default: all)")
    # reach mode (REACH; kept apart from the policy options above)
    p.add_argument("--reach", action="store_true",
                   help="reach-tiny's closed-loop task on libero_object's scenes (as pi0viz sweep --suite reach): a "
                        "random settled layout per (seed, task, trial), the prompt names an object in view, success "
                        "= the gripper within 10 cm of the point 8 cm above it; default --max-steps 80")
    # the prefix's own attention (issue 23; kept apart from the blocks above)
    p.add_argument("--prefix-attention", action="store_true",
                   help="also save each attention call's prefix attention (image and prompt tokens reading each "
                        "other, pi0viz.prefix/1) as bundles/inference_NNN.prefix.npz for `pi0viz view`; JAX "
                        "policies in process only (tiny, reach-tiny, checkpoint:DIR); implies --save-bundles")
    return p


def parse_args(argv: list[str] | None = None) -> Args:
    p = build_parser()
    args = Args(**vars(p.parse_args(argv)))
    if args.attention_every < 1:
        p.error("--attention-every must be >= 1")
    try:
        policy_spec(args)
    except PolicySpecError as err:
        p.error(str(err))
    return args


def _selection_arg(flag: str) -> Callable[[str], str]:
    """argparse type: the selection's syntax checked now (pi0viz.core.selection); the string is kept, and read
    against what exists (the suite's tasks, the capture's layers) when that is known."""
    def check(text: str) -> str:
        try:
            parse_intervals(text, flag)
        except SelectionError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text
    return check


def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in lo..hi (hi None: no upper bound), as click.IntRange in the pi0viz commands."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{'' if hi is None else hi}")
        return value
    check.__name__ = "int"  # argparse names the type in its messages
    return check


if __name__ == "__main__":
    from pi0viz.errors import Pi0vizError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        eval_libero(parse_args())
    except Pi0vizError as err:  # e.g. --rerun without rerun-sdk: one line, not a traceback
        raise SystemExit(f"error: {err}") from None
