"""The sweep driver: plan, disk check, Ray start (local or --address), actors, scheduling with worker-death
recovery, results.

Processes: one driver (this), `env_workers` EnvWorker actors (LIBERO), `policy_actors` PolicyRunner actors, and
short attention / finish tasks. The driver hands each idle env worker one episode at a time (preferring one of
the task whose env it already holds); a worker that dies mid-episode is replaced and its episode redone from the
start. Nothing of a partial episode reaches the store, so a killed sweep resumes by running it again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pi0viz.core.selection import parse_intervals, parse_selection
from pi0viz.errors import CheckpointError, ConfigError, MissingExtraError, Pi0vizError
from pi0viz.sweep import disk, results
from pi0viz.sweep.plan import EpisodeKey, SweepSettings, plan_episodes, sweep_policy
from pi0viz.sweep.policy_actor import PolicyRunner, expected_shape
from pi0viz.sweep.rollout import EnvWorker, WorkerOptions
from pi0viz.sweep.store import RunStore

logger = logging.getLogger("pi0viz.sweep")
NAMESPACE = "pi0viz-sweep"
MAX_ATTEMPTS = 3  # an episode whose worker dies this many times stops the sweep (something is wrong with it)


@dataclasses.dataclass
class RunOptions:
    """How to run (not what): none of this changes an episode record's content.

    Attributes:
        out: RUN_DIR. task_ids: tasks of the suite, a selection such as "0-4" or [0, 3] (None: all).
        episodes_per_task, seed: the plan.
        env_workers: LIBERO worker actors. policy_actors: policy replicas (env worker i uses i % policy_actors).
        address: Ray cluster address ("auto", "ray://host:10001", ...); None starts Ray locally.
        num_cpus: logical CPUs of a local Ray (default: enough slots for the actors plus one attention task per
            env worker, at least the machine's cores; Ray slots only schedule, the OS shares the cores).
        policy_gpus: GPUs per policy actor (0 on CPU machines). worker: WorkerOptions (video, render, ...).
        on_progress: called with (kind, info) on "done", "redo" events (tests, progress displays).
    """

    out: str
    episodes_per_task: int = 50
    task_ids: str | Sequence[int] | None = None
    seed: int = 7
    env_workers: int = 1
    policy_actors: int = 1
    address: str | None = None
    num_cpus: int | None = None
    policy_gpus: float = 0.0
    worker: WorkerOptions = dataclasses.field(default_factory=WorkerOptions)
    on_progress: Callable[[str, dict[str, Any]], None] | None = None
    echo: Callable[[str], None] = print


def run_sweep(settings: SweepSettings, options: RunOptions) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the results dict also written to RUN_DIR/results.json."""
    spec = sweep_policy(settings.policy)
    from pi0viz.policy.spec import check_options

    check_options(spec, tokenizer=settings.tokenizer)
    if spec.kind == "checkpoint" and not (Path(spec.path or "") / "params").is_dir():
        raise CheckpointError(f"--policy {spec}: expected an openpi checkpoint folder with params/ "
                              "(on a cluster: a path every node sees)")
    if options.env_workers < 1 or options.policy_actors < 1:
        raise ConfigError("--env-workers and --policy-actors must be >= 1")
    if options.worker.max_in_flight < 1:
        raise ConfigError(f"--max-in-flight must be >= 1, got {options.worker.max_in_flight}")
    from pi0viz.policy import libero_env

    if settings.suite not in libero_env.SUITES:
        raise ConfigError(f"unknown LIBERO suite {settings.suite!r}; choose one of {list(libero_env.SUITES)}")
    n_tasks = 10 if settings.suite != "libero_90" else 90
    task_ids = parse_selection(options.task_ids, range(n_tasks), "--tasks", within=settings.suite)
    keys = plan_episodes(settings.suite, task_ids, options.episodes_per_task, options.seed)
    store = RunStore(options.out)
    todo = [k for k in keys if not store.is_done(k)]
    partial = sum(store.is_partial(k) for k in todo)
    echo = options.echo
    echo(f"sweep: {len(keys)} episodes ({len(task_ids)} tasks x {options.episodes_per_task}); "
         f"{len(keys) - len(todo)} already finished, {len(todo)} to run ({partial} partial, redone from the start)")
    _check_disk(settings, options, len(todo))  # before anything is written
    store.open(settings)
    if todo:
        _run(settings, options, store, todo)
    summary = results.write_results(store, keys, settings)
    echo(f"sweep: success {summary['total']['successes']}/{summary['total']['episodes']} "
         f"-> {store.root / 'results.md'}")
    return summary


def _check_disk(settings: SweepSettings, options: RunOptions, episodes: int) -> None:
    """Print the expected disk use of the episodes to run; refuse (DiskSpaceError) when it does not fit."""
    from pi0viz.policy import libero_env

    shape = expected_shape(settings.policy)
    if settings.steps is not None or settings.layers is not None:
        # the model's real steps/layers are known only once it runs: count the selection inside the expected
        # shape (a range clipped to it, never expanded); the attention tasks check it against each capture
        steps, layers = parse_intervals(settings.steps, "--steps"), parse_intervals(settings.layers, "--layers")
        shape = dataclasses.replace(shape, steps=steps.count_within(0, shape.steps) if steps else shape.steps,
                                    layers=layers.count_within(0, shape.layers) if layers else shape.layers)
    max_steps = settings.max_steps or libero_env.MAX_STEPS[settings.suite]
    calls = disk.calls_per_episode(max_steps, settings.replan_steps, settings.max_calls)
    est = disk.estimate(shape, episodes=episodes, calls=calls, frames=min(max_steps, calls * settings.replan_steps),
                        video=options.worker.video, render=options.worker.render)
    options.echo(f"sweep: {est.describe()}")
    if episodes:
        free = disk.check_free(options.out, est.total, what="this sweep")
        options.echo(f"sweep: {disk.format_bytes(free)} free at {options.out}")


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("pi0viz sweep needs Ray: pip install 'pi0viz[sweep]' "
                                "(or bash scripts/install.sh sweep)") from None
    return ray


def start_ray(options: RunOptions) -> bool:
    """Connect to `options.address`, or start a local Ray sized for the sweep. Returns True if started here."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if options.address:
        ray.init(address=options.address, namespace=NAMESPACE, log_to_driver=False)
        return True
    cores = os.cpu_count() or 1
    slots = options.num_cpus or max(cores, 2 * options.env_workers + options.policy_actors)
    ray.init(num_cpus=slots, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             object_store_memory=1 << 30)  # 1 GiB: a few calls' bundles in flight; light on a laptop
    return True


def _run(settings: SweepSettings, options: RunOptions, store: RunStore, todo: list[EpisodeKey]) -> None:
    from pi0viz.policy import libero_env

    ray = _ray()
    if not libero_env.libero_installed():  # checked here: inside an actor it would only show as a dead actor
        raise MissingExtraError("pi0viz sweep needs the LIBERO extra: bash scripts/install.sh libero")
    started = start_ray(options)
    Policy = ray.remote(PolicyRunner)
    Worker = ray.remote(EnvWorker)
    run_dir = str(store.root.resolve())

    def new_policy(i: int) -> Any:
        return Policy.options(num_cpus=1, num_gpus=options.policy_gpus, max_concurrency=1).remote(
            settings.policy, settings.tokenizer, settings.all_heads)

    def new_worker(i: int) -> Any:
        return Worker.options(num_cpus=1, name=f"env-{i}-{time.time_ns()}").remote(
            f"env-{i}", run_dir, settings, options.worker)

    try:
        policies = [new_policy(i) for i in range(options.policy_actors)]
        try:  # a bad checkpoint or an unreachable server: say so in one line before any episode starts
            options.echo(f"sweep: policy {ray.get(policies[0].describe.remote())}")
        except ray.exceptions.RayError as err:
            fault = _user_fault(err)
            if fault is not None:
                raise fault from None
            raise
        workers = [new_worker(i) for i in range(options.env_workers)]
        queue = list(todo)
        attempts: dict[EpisodeKey, int] = {}
        holds: dict[int, int | None] = {i: None for i in range(len(workers))}  # task whose env a worker holds
        running: dict[Any, tuple[int, EpisodeKey]] = {}
        finishing: dict[Any, EpisodeKey] = {}
        done = 0
        t_start = time.monotonic()
        while queue or running or finishing:
            for i in range(len(workers)):
                if queue and i not in {w for w, _ in running.values()}:
                    key = _pick(queue, holds[i], {t for j, t in holds.items() if j != i})
                    attempts[key] = attempts.get(key, 0) + 1
                    ref = workers[i].run.remote(key, policies[i % len(policies)])
                    running[ref] = (i, key)
                    holds[i] = key.task
            ready, _ = ray.wait(list(running) + list(finishing), num_returns=1)
            ref = ready[0]
            if ref in running:
                i, key = running.pop(ref)
                try:
                    out = ray.get(ref)
                    finishing[out["finish"]] = key
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, Pi0vizError):
                        raise err.cause from None
                    if not isinstance(err.cause, ray.exceptions.RayError):
                        raise  # a bug in the worker: keep its traceback
                    # its policy actor died or an object was lost: replace what is dead, redo the episode
                    options.echo(f"sweep: {key.name} interrupted ({type(err.cause).__name__}); redoing it")
                    policies = [p if _alive(ray, p) else new_policy(j) for j, p in enumerate(policies)]
                    _requeue(queue, key, attempts, options)
                except ray.exceptions.RayError as err:  # the worker died (killed, crashed, out of memory)
                    options.echo(f"sweep: env worker {i} lost during {key.name} ({type(err).__name__}); "
                                 "replacing it, redoing the episode")
                    ray.kill(workers[i])
                    workers[i], holds[i] = new_worker(i), None
                    _requeue(queue, key, attempts, options)
            else:
                key = finishing.pop(ref)
                try:
                    info = ray.get(ref)
                except ray.exceptions.RayError as err:  # e.g. the worker that owned the write died
                    if not store.is_done(key):
                        options.echo(f"sweep: writing {key.name} failed ({type(err).__name__}); redoing the episode")
                        _requeue(queue, key, attempts, options)
                        continue
                    # the record was complete before its owner died: the episode is done
                    info = dict(store.meta(key), record_bytes=store.record_path(key).stat().st_size)
                done += 1
                rate = done / max(time.monotonic() - t_start, 1e-9) * 3600
                size = disk.format_bytes(info["record_bytes"])
                options.echo(f"sweep: {done}/{len(todo)} {key.name} {'success' if info['success'] else 'failure'} "
                             f"({info['steps']} steps, {info['calls']} calls, {size}); {rate:.0f} episodes/h")
                if options.on_progress is not None:
                    options.on_progress("done", info)
        for w in workers:
            ray.kill(w)
        for p in policies:
            ray.kill(p)
    finally:
        if started:
            ray.shutdown()


def _pick(queue: list[EpisodeKey], task: int | None, others: set[int | None]) -> EpisodeKey:
    """Next episode for a worker: one of the task whose env it holds (no env to build), else one of a task no
    other worker holds (workers spread over tasks), else the first in the queue."""
    for wanted in (lambda k: k.task == task, lambda k: k.task not in others):
        for j, key in enumerate(queue):
            if wanted(key):
                return queue.pop(j)
    return queue.pop(0)


def _requeue(queue: list[EpisodeKey], key: EpisodeKey, attempts: dict[EpisodeKey, int], options: RunOptions) -> None:
    if attempts.get(key, 0) >= MAX_ATTEMPTS:
        raise Pi0vizError(f"episode {key.name} was interrupted {MAX_ATTEMPTS} times; giving up (rerun to resume)")
    queue.insert(0, key)
    if options.on_progress is not None:
        options.on_progress("redo", {"key": key.name})


def _user_fault(err: BaseException) -> Pi0vizError | None:
    """The Pi0vizError (or connection failure) behind a Ray error, following Ray's `cause` chain."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, Pi0vizError):
            return err
        if isinstance(err, ConnectionError):
            return Pi0vizError(str(err))
        err, seen = getattr(err, "cause", None) or err.__cause__, seen + 1
    return None


def _alive(ray: Any, actor: Any) -> bool:
    try:
        return bool(ray.get(actor.ping.remote(), timeout=60))
    except ray.exceptions.RayError:
        return False

