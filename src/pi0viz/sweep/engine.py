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
import math
import numbers
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pi0viz.core.selection import parse_intervals, parse_selection
from pi0viz.errors import CheckpointError, ConfigError, MissingExtraError, Pi0vizError
from pi0viz.sweep import disk, results
from pi0viz.sweep.plan import (FLOAT_FLAGS, LIMITS, REACH_BASELINES, REACH_SUITE, EpisodeKey, SweepSettings,
                               max_steps_of, plan_episodes, sweep_policy)
from pi0viz.sweep.policy_actor import PolicyRunner, expected_shape
from pi0viz.sweep.rollout import EnvWorker, WorkerOptions
from pi0viz.sweep.store import RunStore

logger = logging.getLogger("pi0viz.sweep")
NAMESPACE = "pi0viz-sweep"
MAX_ATTEMPTS = 3  # an episode whose worker dies this many times stops the sweep (something is wrong with it)
PROBE_TIMEOUT = 5.0  # seconds to wait for a policy server or a cluster's port before saying it is not there
# HOST:PORT or ray://HOST[:PORT]; HOST a name, an IPv4 address or an [IPv6] address
_ADDRESS = re.compile(r"(?:(?P<scheme>ray)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
                      r"(?::(?P<port>\d{1,5}))?")


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
    """Run (or resume) a sweep; returns the results dict also written to RUN_DIR/results.json.

    Every argument is checked before anything is written or started (`check_arguments`; the policy and the
    cluster are probed by `probe_policy_and_cluster` before Ray starts): a mistake is one line, and Ray never
    starts for a sweep that cannot run.
    """
    task_ids = check_arguments(settings, options)
    keys = plan_episodes(settings.suite, task_ids, options.episodes_per_task, options.seed)
    store = RunStore(options.out)
    echo = options.echo
    todo = []
    for k in keys:  # resume trusts a record only once it checks out (opens, has its arrays, shapes agree)
        if store.is_done(k):
            continue
        problem = store.record_problem(k)
        if problem is not None:
            echo(f"sweep: {store.record_path(k)}: {problem}; redoing the episode")
        todo.append(k)
    partial = sum(store.is_partial(k) for k in todo)
    echo(f"sweep: {len(keys)} episodes ({len(task_ids)} tasks x {options.episodes_per_task}); "
         f"{len(keys) - len(todo)} already finished, {len(todo)} to run ({partial} partial, redone from the start)")
    _check_disk(settings, options, len(todo))  # before anything is written
    if todo:  # before Ray starts: a policy or cluster that is not there is one line within seconds
        probe_policy_and_cluster(settings, options)
        # the folder is opened only once Ray runs and the policy answered: a refusal there writes nothing
        _run(settings, options, store, todo, open_store=lambda: store.open(settings, echo))
    else:
        store.open(settings, echo)
    summary = results.write_results(store, keys, settings)
    echo(f"sweep: success {summary['total']['successes']}/{summary['total']['episodes']} "
         f"-> {store.root / 'results.md'}")
    return summary


def check_arguments(settings: SweepSettings, options: RunOptions) -> list[int]:
    """Check every argument of a sweep without starting anything (no Ray, no model, no file written); returns
    the selected task ids.

    Checked: the policy spec and its options (a --tokenizer that is a file), the counts and sizes (plan.LIMITS:
    integers, or for --policy-gpus a finite number, inside their ranges), --num-cpus against the actors it must
    hold, the suite, --tasks against the suite and --steps/--layers against the policy's model shape (a served
    policy's shape is known only from its first call: syntax only), and --address's syntax. A range is never
    expanded (pi0viz.core.selection). Raises a Pi0vizError with one line.
    """
    from pi0viz.policy import libero_env
    from pi0viz.policy.spec import check_options

    spec = sweep_policy(settings.policy)
    check_options(spec, tokenizer=settings.tokenizer)
    if settings.tokenizer is not None and not Path(settings.tokenizer).expanduser().is_file():
        raise CheckpointError(f"--tokenizer {settings.tokenizer}: no such file; expected PaliGemma's "
                              "paligemma_tokenizer.model (on a cluster: a path every node sees)")
    if spec.kind == "checkpoint" and not (Path(spec.path or "") / "params").is_dir():
        raise CheckpointError(f"--policy {spec}: expected an openpi checkpoint folder with params/ "
                              "(on a cluster: a path every node sees)")
    given = {"--episodes-per-task": options.episodes_per_task, "--env-workers": options.env_workers,
             "--policy-actors": options.policy_actors, "--num-cpus": options.num_cpus,
             "--policy-gpus": options.policy_gpus, "--max-steps": settings.max_steps,
             "--max-calls": settings.max_calls, "--max-in-flight": options.worker.max_in_flight,
             "--env-resolution": settings.env_resolution, "--seed": options.seed}
    for flag, value in given.items():
        check_number(flag, value)
    for name, value, lo in (("replan_steps", settings.replan_steps, 1), ("num_steps_wait", settings.num_steps_wait, 0),
                            ("resize_size", settings.resize_size, 1)):  # API-only settings (openpi's loop)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
            raise ConfigError(f"SweepSettings.{name} must be an integer >= {lo}, got {value!r}")
    if options.address is not None:
        parse_address(options.address)
        if options.num_cpus is not None and options.address.strip() != "local":
            raise ConfigError("--num-cpus sizes a local Ray; with --address the cluster has its own CPUs "
                              "(leave --num-cpus out)")
    if options.num_cpus is not None and options.num_cpus < options.env_workers + options.policy_actors + 1:
        need = options.env_workers + options.policy_actors + 1
        raise ConfigError(f"--num-cpus {options.num_cpus} cannot hold the sweep: it needs at least {need} CPU slots "
                          f"({options.env_workers} for env workers, {options.policy_actors} for policy actors, 1 for "
                          "attention work); with fewer its actors would wait forever")
    if settings.suite not in libero_env.SUITES + (REACH_SUITE,):
        raise ConfigError(f"unknown LIBERO suite {settings.suite!r}; choose one of {list(libero_env.SUITES)} or "
                          f"{REACH_SUITE!r} (reach-tiny's task in closed loop)")
    if settings.suite == REACH_SUITE and spec.kind not in ("reach-tiny", "checkpoint"):
        raise ConfigError(f"--suite reach runs a reach-tiny model (--policy reach-tiny or checkpoint:DIR of one), "
                          f"got --policy {spec}")
    if settings.reach_baseline is not None and (settings.suite != REACH_SUITE
                                                or settings.reach_baseline not in REACH_BASELINES):
        raise ConfigError(f"--reach-baseline {settings.reach_baseline!r}: expected one of {list(REACH_BASELINES)} "
                          "with --suite reach")
    n_tasks = 10 if settings.suite != "libero_90" else 90
    task_ids = parse_selection(options.task_ids, range(n_tasks), "--tasks", within=settings.suite)
    shape = expected_shape(settings.policy)
    for flag, text, size in (("--steps", settings.steps, shape.steps), ("--layers", settings.layers, shape.layers)):
        if spec.kind == "server":  # its model is known only once it answers; each call's task checks it then
            parse_intervals(text, flag)
        elif text is not None:
            parse_selection(text, range(size), flag, within=f"policy {spec}")  # "... which has 0-9"
    return task_ids


def check_number(flag: str, value: Any) -> None:
    """Refuse a count or size outside plan.LIMITS[flag] (None passes: the flag's default); ConfigError, one line.

    Integers must be integers (Python or numpy; not bools, not floats); --policy-gpus may be any finite real number
    in its range.
    """
    if value is None:
        return
    lo, hi = LIMITS[flag]
    if flag in FLOAT_FLAGS:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = real and math.isfinite(value) and lo <= value <= (hi if hi is not None else value)
        kind = "a finite number"
    else:
        integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        ok = integer and lo <= value <= (hi if hi is not None else value)
        kind = "an integer"
    if not ok:
        bound = f"in {lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
        raise ConfigError(f"{flag} must be {kind} {bound}, got {value!r}")


def parse_address(address: str) -> tuple[str, int] | None:
    """A Ray cluster address as Ray takes it: "auto" (the cluster this machine runs, or $RAY_ADDRESS), "local"
    (start a new local Ray), "HOST:PORT" (the cluster's GCS, e.g. 10.0.0.5:6379) or "ray://HOST[:PORT]" (Ray
    Client, port 10001 by default); HOST may be "[IPv6]". Returns (host, port) to probe, or None for auto/local.

    Raises ConfigError (one line) for anything else.
    """
    text = address.strip() if isinstance(address, str) else ""
    if text in ("auto", "local"):
        return None
    m = _ADDRESS.fullmatch(text)
    if m is None or not (m["port"] or m["scheme"]):
        raise ConfigError(f"--address {address!r} is not a Ray address; expected 'auto', 'local', HOST:PORT (the "
                          "head's GCS, e.g. 10.0.0.5:6379) or ray://HOST:PORT (Ray Client, e.g. ray://head:10001)")
    port = int(m["port"]) if m["port"] else 10001
    if not 1 <= port <= 65535:
        raise ConfigError(f"--address {address!r}: port {port} is not in 1..65535")
    return m["host"].strip("[]"), port


def probe_policy_and_cluster(settings: SweepSettings, options: RunOptions, *, timeout: float | None = None) -> None:
    """Before Ray starts: the checks a worker would make first, made here, so a fault is one line within
    seconds instead of a dead actor minutes later.

    A checkpoint: its norm stats and every parameter's shape in its metadata against the config (no weights read;
    the same checks and lines as `Policy.from_checkpoint`, which `demo` and `serve` print). A ws:// policy: a
    websocket connection and its metadata within `timeout` s. A cluster address HOST:PORT: its port accepts a TCP
    connection within `timeout` s (default PROBE_TIMEOUT).
    """
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    spec = sweep_policy(settings.policy)
    if spec.kind == "checkpoint":
        from pi0viz.policy.reach_model import is_reach_checkpoint
        from pi0viz.policy.spec import check_checkpoint

        if not is_reach_checkpoint(Path(spec.path or "")):  # a reach-tiny run loads with its own config
            check_checkpoint(spec)  # the default config, as the actor's load_policy uses
    elif spec.kind == "server":
        from pi0viz.serving.client import probe_server

        probe_server(spec.uri or "", timeout=timeout)
    target = parse_address(options.address) if options.address is not None else None
    if target is not None:
        host, port = target
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as err:
            why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
            raise ConfigError(f"--address {options.address}: no Ray cluster answers at {host}:{port} ({why} within "
                              f"{timeout:g} s); start one (ray start --head) or check the address") from None


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
    max_steps = settings.max_steps or max_steps_of(settings.suite)
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
    """Connect to `options.address`, or start a local Ray sized for the sweep ("local" or no address). Returns
    True if started here.

    Raises ConfigError (one line, Ray shut down again) when the cluster cannot be reached, or when a local Ray
    has fewer GPUs than --policy-gpus x --policy-actors need (the policy actors would wait forever).
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    address = options.address.strip() if options.address else None
    if address and address != "local":
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:  # Ray's ways of saying "not there"
            why = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--address {options.address}: cannot connect to a Ray cluster ({why})") from None
        return True
    cores = os.cpu_count() or 1
    slots = options.num_cpus or max(cores, 2 * options.env_workers + options.policy_actors)
    ray.init(address=address, num_cpus=slots, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             object_store_memory=1 << 30)  # 1 GiB: a few calls' bundles in flight; light on a laptop
    if options.policy_gpus > 0:
        have = int(ray.cluster_resources().get("GPU", 0))
        per_gpu = int(1 / options.policy_gpus + 1e-9)  # policy actors that share one GPU
        need = -(-options.policy_actors // per_gpu)
        if have < need:
            ray.shutdown()
            raise ConfigError(f"--policy-gpus {options.policy_gpus:g} x {options.policy_actors} policy actors need "
                              f"{need} GPU{'s' if need != 1 else ''}; this machine's Ray sees {have} (use "
                              "--policy-gpus 0 on a CPU machine)")
    return True


def _run(settings: SweepSettings, options: RunOptions, store: RunStore, todo: list[EpisodeKey], *,
         open_store: Callable[[], Any]) -> None:
    """Start Ray, the policy actors (their first answer proves the policy loads), then `open_store()` and the
    env workers, and run `todo` to the end."""
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
            settings.policy, settings.tokenizer, settings.all_heads, settings.reach_baseline)

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
        open_store()  # the env workers write into the folder
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
                    fault = _user_fault(err)
                    if fault is not None:  # e.g. --steps outside a served model's steps: redoing cannot help
                        raise fault from None
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
    """The Pi0vizError (or connection failure) behind a Ray error, following Ray's `cause` chain.

    An actor whose creation failed (a checkpoint that does not load) is a RayActorError without a cause: only its
    text holds the remote traceback, whose last line is the error's type and its one line; that line is returned
    as the same error type, so the user sees what `demo` and `serve` print and not the actor's traceback.
    """
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, Pi0vizError):
            return err
        if isinstance(err, ConnectionError):
            return Pi0vizError(str(err))
        text = getattr(err, "error_msg", None)
        if isinstance(text, str):
            fault = _fault_from_traceback(text)
            if fault is not None:
                return fault
        err, seen = getattr(err, "cause", None) or err.__cause__, seen + 1
    return None


_REMOTE_ERROR = re.compile(r"^(?:pi0viz(?:\.\w+)*\.)?(?P<name>\w+Error): (?P<line>.+)$")


def _fault_from_traceback(text: str) -> Pi0vizError | None:
    """The Pi0vizError named by the last line of a remote traceback ("pi0viz.errors.CheckpointError: ..."), or
    a ConnectionError's line; None for any other error (a bug keeps its traceback)."""
    import pi0viz.errors as errors
    from pi0viz.policy.spec import PolicySpecError

    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    m = _REMOTE_ERROR.match(lines[-1]) if lines else None
    if m is None:
        return None
    known = {cls.__name__: cls for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, Pi0vizError)}
    known[PolicySpecError.__name__] = PolicySpecError
    if m["name"] in known and lines[-1].startswith(("pi0viz.", m["name"])):
        return known[m["name"]](m["line"])
    if m["name"] == "ConnectionError":
        return Pi0vizError(m["line"])
    return None


def _alive(ray: Any, actor: Any) -> bool:
    try:
        return bool(ray.get(actor.ping.remote(), timeout=60))
    except ray.exceptions.RayError:
        return False

