"""`pi0viz sweep`: a whole LIBERO evaluation with attention, on Ray (local by default, --address for a cluster)."""

from __future__ import annotations

import click

from pi0viz.sweep.plan import LIMITS


def _ints(flag: str) -> click.IntRange:
    """The click range of an integer flag, from plan.LIMITS (the engine checks the same for API callers)."""
    lo, hi = LIMITS[flag]
    return click.IntRange(int(lo), None if hi is None else int(hi))


def _check_policy(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Parse --policy before anything starts (a bad spec is one line); the settings keep the text as given."""
    from pi0viz.sweep.plan import sweep_policy

    sweep_policy(value)
    return value


@click.command("sweep")
@click.option("--suite", default="libero_spatial", show_default=True,
              help="LIBERO task suite, or 'reach' (reach-tiny's task in closed loop on libero_object's scenes).")
@click.option("--episodes-per-task", type=_ints("--episodes-per-task"), default=50, show_default=True,
              help="Trials per task (openpi: 50).")
@click.option("--policy", default="tiny", show_default=True, metavar="SPEC", callback=_check_policy,
              help="tiny, reach-tiny, checkpoint:DIR or ws://HOST:PORT (the spec every pi0viz command takes).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="RUN_DIR (resumable).")
@click.option("--tasks", default=None,
              help="Task ids, e.g. '0,1' or '0-4'; a range keeps the suite's tasks inside it (default: all).")
@click.option("--address", default=None,
              help="Ray cluster: auto, local, HOST:PORT or ray://HOST:PORT; default: start Ray locally.")
@click.option("--env-workers", type=_ints("--env-workers"), default=1, show_default=True,
              help="LIBERO env worker actors.")
@click.option("--policy-actors", type=_ints("--policy-actors"), default=1, show_default=True, help="Policy replicas.")
@click.option("--num-cpus", type=_ints("--num-cpus"), default=None,
              help="CPU slots of a local Ray (default: enough for the actors, at least the machine's cores).")
@click.option("--policy-gpus", type=click.FloatRange(*LIMITS["--policy-gpus"]), default=0.0, show_default=True,
              help="GPUs per policy actor (a share of one GPU, or 1).")
@click.option("--tokenizer", type=click.Path(dir_okay=False), default=None,
              help="PaliGemma tokenizer for --policy checkpoint:DIR (a path every node sees).")
@click.option("--max-steps", type=_ints("--max-steps"), default=None,
              help="Env steps per episode (default: the suite's, as openpi).")
@click.option("--max-calls", type=_ints("--max-calls"), default=None, help="End each episode after N inference calls.")
@click.option("--steps", default=None, help="Denoising steps kept in the records, e.g. '9' or '5-9' (default: all).")
@click.option("--layers", default=None, help="Layers kept in the records, e.g. '12-17' (default: all).")
@click.option("--all-heads", is_flag=True, help="Ship every head (exact per-head masses; 8x more data).")
@click.option("--render", is_flag=True, help="Also render each call's JPEG tree (~370 MB per full pi0 call).")
@click.option("--save-bundles", is_flag=True, help="Also save each call's capture bundle (.npz).")
@click.option("--no-video", is_flag=True, help="Skip the rollout videos.")
@click.option("--max-in-flight", type=_ints("--max-in-flight"), default=2, show_default=True,
              help="Attention tasks per env worker pending before its simulator waits.")
@click.option("--env-resolution", type=_ints("--env-resolution"), default=256, show_default=True,
              help="LIBERO camera pixels (the model sees 224 either way).")
@click.option("--seed", type=_ints("--seed"), default=7, show_default=True,
              help="Seed of the evaluation (env and policy noise).")
@click.option("--grounding/--no-grounding", default=True, show_default=True,
              help="Segment the task's objects in every call's frames and store grounding metrics per call.")
@click.option("--reach-baseline", type=click.Choice(["untrained", "prompt-blind", "scripted"]), default=None,
              help="--suite reach: run a baseline on the same episodes (docs/reach_tiny.md).")
def sweep_command(suite: str, episodes_per_task: int, policy: str, out: str, tasks: str | None, address: str | None,
                  env_workers: int, policy_actors: int, num_cpus: int | None, policy_gpus: float, tokenizer: str | None,
                  max_steps: int | None, max_calls: int | None, steps: str | None, layers: str | None,
                  all_heads: bool, render: bool, save_bundles: bool, no_video: bool, max_in_flight: int,
                  env_resolution: int, seed: int, grounding: bool, reach_baseline: str | None) -> None:
    """Run (or resume) a whole LIBERO evaluation with attention: one record per episode in OUT/episodes,
    per-task success rates in OUT/results.md. Rerun the same command to finish an interrupted sweep."""
    from pi0viz.sweep.engine import RunOptions, run_sweep
    from pi0viz.sweep.plan import SweepSettings
    from pi0viz.sweep.rollout import WorkerOptions

    settings = SweepSettings(suite=suite, policy=policy, tokenizer=tokenizer, max_steps=max_steps, max_calls=max_calls,
                             env_resolution=env_resolution, all_heads=all_heads, steps=steps, layers=layers,
                             grounding=grounding, reach_baseline=reach_baseline)
    options = RunOptions(out=out, episodes_per_task=episodes_per_task, task_ids=tasks,
                         seed=seed, env_workers=env_workers, policy_actors=policy_actors, address=address,
                         num_cpus=num_cpus, policy_gpus=policy_gpus,
                         worker=WorkerOptions(max_in_flight=max_in_flight, video=not no_video, render=render,
                                              save_bundles=save_bundles),
                         echo=click.echo)
    run_sweep(settings, options)
