"""Hostile arguments to `pi0viz sweep` (issue 20, "one line, exit 1, before work starts").

Every argument of a sweep is checked before Ray starts and before any episode runs: counts and sizes, selections
against the suite and against the policy's model shape, the Ray address, and the policy itself (a checkpoint's
metadata, a ws:// server's answer, a cluster's port, each within seconds). Each case runs the real command
in-process and asserts: exit 1, exactly one error line, no traceback, that it answered at once, that Ray was never
started (`start_ray` is replaced by a trap), and that the --out folder was not even created, so nothing can block
the corrected rerun. A folder holding an earlier run stays byte-identical.

Everything here runs without Ray and LIBERO, except `test_checkpoint_failing_inside_the_ray_actor_is_one_line`
(a real local Ray, marked slow), which checks the second line of defence: a checkpoint whose metadata is fine but
whose weights do not load fails in the actor, and the user still gets the one line `demo` and `serve` print.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.errors import CheckpointError, ConfigError, Pi0vizError, SelectionError
from pi0viz.sweep import engine
from pi0viz.sweep.engine import RunOptions, check_arguments, parse_address
from pi0viz.sweep.plan import MAX_EPISODES, SweepSettings
from pi0viz.sweep.policy_actor import PI0_SHAPE, REACH_SHAPE, TINY_SHAPE

# Small runs: every refusal below must come from the argument named, not from the disk guard.
SMALL = ["--episodes-per-task", "1", "--tasks", "0", "--max-calls", "1", "--no-video"]
AT_ONCE_S = 3.0  # a refusal answers in well under this (the checks are milliseconds; imports are the rest)
CHECKPOINT_S = 20.0  # a checkpoint's metadata is read with orbax: JAX starts in the driver (no weights are read)


class RayStarted(AssertionError):
    """Raised by the trap that replaces `start_ray`: a refused sweep must never get that far."""


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def trap(options: RunOptions) -> bool:
        raise RayStarted("Ray was started for a sweep that should have been refused")

    monkeypatch.setattr(engine, "start_ray", trap)


def refused(out: Path, *args: object, within: float = AT_ONCE_S) -> str:
    """Run `pi0viz sweep --out OUT ARGS`; assert exit 1, one error line, no traceback, an answer within `within`
    seconds and no Ray started. Returns the error line."""
    start = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", "--out", str(out), *[str(a) for a in args]])
    elapsed = time.monotonic() - start
    assert not isinstance(result.exception, RayStarted), "Ray was started before the refusal"
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output!r} {result.exception!r}"
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert elapsed < within, f"answered after {elapsed:.1f} s"
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A loopback TCP server that accepts connections and never says a word (a hung or wrong service)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    for c in held:
        c.close()
    srv.close()


@pytest.fixture
def http_server() -> Iterator[int]:
    """A loopback server that answers every connection with a plain HTTP 404 (not a websocket server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = srv.accept()[0]
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()


# -- 1. counts and sizes: refused, never a fake results table ---------------------------------------------------

COUNTS = {
    "episodes-zero": (["--episodes-per-task", "0"], "--episodes-per-task"),
    "episodes-negative": (["--episodes-per-task", "-5"], "--episodes-per-task"),
    "episodes-1e11": (["--episodes-per-task", "100000000000"], "--episodes-per-task"),
    "episodes-fraction": (["--episodes-per-task", "1.5"], "--episodes-per-task"),
    "env-workers-zero": (["--env-workers", "0"], "--env-workers"),
    "env-workers-negative": (["--env-workers", "-1"], "--env-workers"),
    "env-workers-huge": (["--env-workers", "1000000000"], "--env-workers"),
    "policy-actors-zero": (["--policy-actors", "0"], "--policy-actors"),
    "num-cpus-zero": (["--num-cpus", "0"], "--num-cpus"),
    "num-cpus-negative": (["--num-cpus", "-4"], "--num-cpus"),
    "num-cpus-too-few-for-the-actors": (["--num-cpus", "2"], "--num-cpus 2 cannot hold the sweep"),
    "num-cpus-with-a-cluster": (["--num-cpus", "8", "--address", "auto"], "--num-cpus sizes a local Ray"),
    "policy-gpus-negative": (["--policy-gpus", "-1"], "--policy-gpus"),
    "policy-gpus-nan": (["--policy-gpus", "nan"], "--policy-gpus must be a finite number"),
    "policy-gpus-inf": (["--policy-gpus", "inf"], "--policy-gpus"),
    "policy-gpus-two": (["--policy-gpus", "2"], "--policy-gpus"),
    "max-steps-zero": (["--max-steps", "0"], "--max-steps"),
    "max-steps-negative": (["--max-steps", "-10"], "--max-steps"),
    "max-calls-zero": (["--max-calls", "0"], "--max-calls"),
    "max-calls-negative": (["--max-calls", "-1"], "--max-calls"),
    "max-in-flight-zero": (["--max-in-flight", "0"], "--max-in-flight"),
    "env-resolution-zero": (["--env-resolution", "0"], "--env-resolution"),
    "env-resolution-negative": (["--env-resolution", "-256"], "--env-resolution"),
    "env-resolution-huge": (["--env-resolution", "100000"], "--env-resolution"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "seed-past-2^32": (["--seed", "4294967296"], "--seed"),
    "suite-unknown": (["--suite", "libero_100"], "unknown LIBERO suite 'libero_100'"),
}


@pytest.mark.parametrize("args,expected", COUNTS.values(), ids=COUNTS.keys())
def test_bad_count_or_size_is_one_line_before_anything_starts(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "run"
    line = refused(out, *SMALL, *args)
    assert expected in line, line
    assert not out.exists()  # nothing written: the corrected rerun starts from a clean slate


def test_a_plan_of_10_to_the_12_episodes_answers_at_once(tmp_path: Path) -> None:
    # the task range is clipped to the suite's 10 tasks without being expanded; the plan's size is refused before
    # a single key is made (10 x 100,000 = 10^6 > MAX_EPISODES)
    line = refused(tmp_path / "run", "--tasks", "0-100000000000", "--episodes-per-task", "100000")
    assert f"10 tasks is 1000000 episodes; a sweep plans at most {MAX_EPISODES}" in line
    assert not (tmp_path / "run").exists()


def test_the_same_counts_are_checked_for_python_callers(tmp_path: Path) -> None:
    ok = RunOptions(out=str(tmp_path / "run"), episodes_per_task=1, task_ids="0")
    assert check_arguments(SweepSettings(), ok) == [0]
    for bad, match in (({"env_workers": 0}, "--env-workers"), ({"policy_gpus": math.nan}, "--policy-gpus"),
                       ({"num_cpus": -1}, "--num-cpus"), ({"seed": -3}, "--seed"), ({"env_workers": True}, "--env-w"),
                       ({"episodes_per_task": 2.5}, "--episodes-per-task")):
        with pytest.raises(ConfigError, match=match):
            check_arguments(SweepSettings(), RunOptions(**{**vars(ok), **bad}))
    for settings, match in ((SweepSettings(max_calls=-1), "--max-calls"), (SweepSettings(max_steps=0), "--max-steps"),
                            (SweepSettings(env_resolution=-1), "--env-resolution"),
                            (SweepSettings(replan_steps=0), "replan_steps")):
        with pytest.raises(ConfigError, match=match):
            check_arguments(settings, ok)


# -- 2. selections: against the suite and against the policy's model shape, before any episode ------------------

SELECTIONS = {
    "task-not-in-suite": (["--tasks", "10"], "--tasks: [10] not in libero_spatial, which has 0-9"),
    "task-range-outside-suite": (["--tasks", "11-100000000000"], "holds none of libero_spatial's 0-9"),
    "task-backwards": (["--tasks", "5-3"], "runs backwards"),
    "task-negative": (["--tasks", "-1"], "indices start at 0"),
    "task-empty": (["--tasks", ""], "the selection is empty"),
    "step-past-tiny": (["--steps", "10"], "--steps: [10] not in policy tiny, which has 0-9"),
    "step-range-past-tiny": (["--steps", "10-100000000000"], "holds none of policy tiny's 0-9"),
    "layer-past-tiny": (["--layers", "4"], "--layers: [4] not in policy tiny, which has 0-3"),
    "layer-of-full-pi0-on-tiny": (["--layers", "12-17"], "holds none of policy tiny's 0-3"),
    "layer-past-reach-tiny": (["--policy", "reach-tiny", "--layers", "5"], "not in policy reach-tiny, which has 0-3"),
    "layer-empty-item": (["--layers", "0,,1"], "cannot read ''"),
    "step-backwards": (["--steps", "3-1"], "runs backwards"),
    "step-negative": (["--steps", "-1"], "indices start at 0"),
    "step-text": (["--steps", "last"], "cannot read 'last'"),
}


@pytest.mark.parametrize("args,expected", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_bad_selection_is_one_line_before_any_episode(tmp_path: Path, args: list[str], expected: str) -> None:
    # today's fault: --steps 10 on the tiny pi0 ran three episodes that each failed, "interrupted 3 times"
    out = tmp_path / "run"
    line = refused(out, *SMALL, *args)
    assert expected in line, line
    assert not out.exists()


def test_a_huge_range_inside_the_model_answers_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A range is clipped, never expanded: --steps 5-10^11 on the tiny pi0 keeps steps 5..9 and goes on (to the
    trap standing in for Ray, after the probes)."""
    seen: list[tuple[str | None, str | None]] = []

    def fake_run(settings: SweepSettings, options: RunOptions, store: Any, todo: list, **kw: Any) -> None:
        seen.append((settings.steps, settings.layers))
        raise RayStarted("stop here")

    monkeypatch.setattr(engine, "_run", fake_run)
    start = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", "--out", str(tmp_path / "run"), *SMALL,
                                       "--steps", "5-100000000000", "--layers", "0-100000000000"])
    assert time.monotonic() - start < AT_ONCE_S
    assert isinstance(result.exception, RayStarted) and seen == [("5-100000000000", "0-100000000000")]
    assert "records" in result.output and not (tmp_path / "run").exists()


def test_the_sweeps_model_shapes_are_the_configs() -> None:
    """The shapes checked before anything starts (no model is built there) are those the policies really have."""
    import inspect

    from pi0viz.model.config import GEMMA_VARIANTS
    from pi0viz.policy.configs import DEFAULT_CONFIG, get_config
    from pi0viz.policy.jax_policy import Policy
    from pi0viz.policy.reach_model import reach_config

    steps = inspect.signature(Policy.__init__).parameters["num_steps"].default
    named = get_config(DEFAULT_CONFIG)
    for shape, config in ((TINY_SHAPE, named.tiny_model_config(257152)), (PI0_SHAPE, named.model),
                          (REACH_SHAPE, reach_config(257152))):
        assert shape.steps == steps
        assert shape.layers == GEMMA_VARIANTS[config.paligemma_variant].depth
        assert shape.action_tokens == config.action_horizon


# -- 3. the Ray address and the policy's server: syntax at once, reachability within seconds --------------------

ADDRESSES = {
    "garbage": ("garbage!!", "is not a Ray address"),
    "http-scheme": ("http://head:8265", "is not a Ray address"),
    "no-port": ("head", "is not a Ray address"),
    "empty": ("", "is not a Ray address"),
    "scheme-only": ("ray://", "is not a Ray address"),
    "port-out-of-range": ("head:99999", "port 99999 is not in 1..65535"),
    "port-zero": ("ray://head:0", "port 0 is not in 1..65535"),
    "spaces": ("head :6379", "is not a Ray address"),
}


@pytest.mark.parametrize("address,expected", ADDRESSES.values(), ids=ADDRESSES.keys())
def test_bad_address_syntax_is_one_line(tmp_path: Path, address: str, expected: str) -> None:
    line = refused(tmp_path / "run", *SMALL, "--address", address)
    assert expected in line, line
    assert not (tmp_path / "run").exists()


def test_addresses_ray_takes_are_accepted() -> None:
    assert parse_address("auto") is None and parse_address("local") is None
    assert parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert parse_address("ray://head-node.cluster:10001") == ("head-node.cluster", 10001)
    assert parse_address("ray://head") == ("head", 10001)  # Ray Client's default port
    assert parse_address("[::1]:6379") == ("::1", 6379)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_cluster_is_one_line_within_seconds(tmp_path: Path, closed_port: int, scheme: str) -> None:
    line = refused(tmp_path / "run", *SMALL, "--address", f"{scheme}127.0.0.1:{closed_port}")
    assert f"no Ray cluster answers at 127.0.0.1:{closed_port}" in line, line
    assert not (tmp_path / "run").exists()


def test_unreachable_policy_server_is_one_line_within_seconds(tmp_path: Path, closed_port: int) -> None:
    # today: five minutes of silence (the actor's connect timeout), then a traceback
    line = refused(tmp_path / "run", *SMALL, "--policy", f"ws://127.0.0.1:{closed_port}")
    assert f"no policy server at ws://127.0.0.1:{closed_port}" in line, line
    assert not (tmp_path / "run").exists()


def test_unresolvable_policy_host_is_one_line(tmp_path: Path) -> None:
    line = refused(tmp_path / "run", *SMALL, "--policy", "ws://no-such-host.invalid:8000")
    assert "no policy server at ws://no-such-host.invalid:8000" in line, line


def test_a_server_that_is_not_a_websocket_server_is_one_line(tmp_path: Path, http_server: int) -> None:
    line = refused(tmp_path / "run", *SMALL, "--policy", f"ws://127.0.0.1:{http_server}")
    assert f"no policy server at ws://127.0.0.1:{http_server}" in line, line


def test_a_server_that_never_answers_is_one_line_after_the_probe_timeout(
        tmp_path: Path, mute_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "PROBE_TIMEOUT", 0.5)
    line = refused(tmp_path / "run", *SMALL, "--policy", f"ws://127.0.0.1:{mute_server}")
    assert f"ws://127.0.0.1:{mute_server}" in line and "0.5 s" in line, line
    assert not (tmp_path / "run").exists()


@pytest.fixture
def ws_server() -> Iterator[Any]:
    """Start a loopback websocket server whose first message is `first` (bytes or text); yields a starter that
    returns its ws:// address."""
    from websockets.sync.server import serve

    servers: list[Any] = []

    def start(first: bytes | str) -> str:
        def handler(ws: Any) -> None:
            ws.send(first)
            try:
                ws.recv(timeout=5)
            except Exception:  # the client hung up: all a probe does
                pass

        server = serve(handler, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"ws://127.0.0.1:{server.socket.getsockname()[1]}"

    yield start
    for server in servers:
        server.shutdown()


def test_a_server_that_speaks_another_protocol_is_one_line(tmp_path: Path, ws_server: Any) -> None:
    for first, expected in (("hello", "sent text instead of a policy server's metadata"),
                            (b"\xc1\xc1 not msgpack", "sent something other than a policy server's metadata")):
        line = refused(tmp_path / "run", *SMALL, "--policy", ws_server(first))
        assert expected in line, line
    assert not (tmp_path / "run").exists()


def test_a_policy_server_that_answers_passes_the_probe(ws_server: Any) -> None:
    from pi0viz.serving import msgpack_numpy
    from pi0viz.serving.client import probe_server

    uri = ws_server(msgpack_numpy.packb({"server": "pi0viz test", "action_horizon": 50}))
    assert probe_server(uri, timeout=5)["action_horizon"] == 50


# -- 4. checkpoints: the checks Policy.from_checkpoint makes first, made in the driver ---------------------------

ASSET = "physical-intelligence/libero"
GOOD_STATS = {"state": {"mean": [0.0] * 8, "std": [1.0] * 8}, "actions": {"mean": [0.0] * 7, "std": [1.0] * 7}}


def fake_checkpoint(root: Path, *, stats: bool = True, metadata: bytes | None = None) -> Path:
    (root / "params").mkdir(parents=True)
    if stats:
        path = root / "assets" / ASSET / "norm_stats.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"norm_stats": GOOD_STATS}))
    if metadata is not None:
        (root / "params" / "_METADATA").write_bytes(metadata)
    return root


CHECKPOINTS = {
    "no-params-folder": (lambda d: d.mkdir() or d, "expected an openpi checkpoint folder with params/"),
    "no-norm-stats": (lambda d: fake_checkpoint(d, stats=False), "no norm stats at"),
    "no-metadata": (lambda d: fake_checkpoint(d), "is not an orbax PyTree checkpoint: no _METADATA file"),
    "garbage-metadata": (lambda d: fake_checkpoint(d, metadata=b"\x00garbage{"), "expected a top-level key 'params'"),
}


@pytest.mark.parametrize("make,expected", CHECKPOINTS.values(), ids=CHECKPOINTS.keys())
def test_broken_checkpoint_is_one_line_before_ray(tmp_path: Path, make: Any, expected: str) -> None:
    ckpt = make(tmp_path / "ckpt")
    before = snapshot(tmp_path / "ckpt")
    line = refused(tmp_path / "run", *SMALL, "--policy", f"checkpoint:{ckpt}", within=CHECKPOINT_S)
    assert expected in line, line
    assert snapshot(tmp_path / "ckpt") == before and not (tmp_path / "run").exists()


def test_tokenizer_options_are_checked(tmp_path: Path) -> None:
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    line = refused(tmp_path / "run", *SMALL, "--policy", f"checkpoint:{ckpt}", "--tokenizer", tmp_path / "nope.model")
    assert "--tokenizer" in line and "no such file" in line
    line = refused(tmp_path / "run", *SMALL, "--tokenizer", tmp_path / "nope.model")  # policy tiny has its own
    assert "a tokenizer goes with policy checkpoint:DIR" in line
    line = refused(tmp_path / "run", *SMALL, "--policy", f"lerobot:{ckpt}")
    assert "pi0viz sweep cannot run policy" in line
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pi0's parameters in openpi's checkpoint layout, with LIBERO norm stats."""
    from extras import require

    require("jax", "jax")
    from pi0viz.model.checkpoint import save_params
    from pi0viz.policy.jax_policy import Policy

    root = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_params(Policy.tiny(seed=0).params, root / "params")
    path = root / "assets" / ASSET / "norm_stats.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"norm_stats": GOOD_STATS}))
    return root


def test_tiny_checkpoint_under_the_full_size_config_is_the_line_demo_prints(tmp_path: Path,
                                                                            tiny_checkpoint: Path) -> None:
    """The sweep runs checkpoints under the full-size config: the shapes in the metadata are compared before Ray,
    and the line is the one `demo --checkpoint` prints (tests/test_hostile.py)."""
    start = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", "--out", str(tmp_path / "run"), *SMALL,
                                       "--policy", f"checkpoint:{tiny_checkpoint}"])
    assert time.monotonic() - start < CHECKPOINT_S
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert "config expects" in line and "Pi0Config.tiny" in line and str(tiny_checkpoint) in line, line
    assert not (tmp_path / "run").exists()


def test_ray_actor_errors_unwrap_to_the_pi0viz_line() -> None:
    """The second line of defence, on the texts Ray gives: an actor whose creation failed has no `cause`, only
    its remote traceback; its last line is the error and its one line."""
    from pi0viz.sweep.engine import _fault_from_traceback, _user_fault

    text = ("The actor died because of an error raised in its creation task, ray::PolicyRunner.__init__() (pid=1)\n"
            "  File \"/x/jax_policy.py\", line 142, in from_checkpoint\n"
            "    params = load_params(checkpoint_dir / \"params\", dtype=config.dtype, config=config)\n"
            "pi0viz.errors.CheckpointError: /ck/params: cannot read the parameters, truncated (ValueError: x)\n")
    fault = _fault_from_traceback(text)
    assert isinstance(fault, CheckpointError) and str(fault).startswith("/ck/params: cannot read the parameters")
    spec = _fault_from_traceback("...\npi0viz.policy.spec.PolicySpecError: policy 'x' is not a policy spec")
    assert spec is not None and "is not a policy spec" in str(spec)
    assert _fault_from_traceback("...\nValueError: a bug in pi0viz") is None  # a bug keeps its traceback
    assert _fault_from_traceback("") is None

    class ActorDied(Exception):  # the shape of ray.exceptions.ActorDiedError: error_msg, no cause
        def __init__(self, msg: str) -> None:
            super().__init__(msg)
            self.error_msg = msg

    assert isinstance(_user_fault(ActorDied(text)), CheckpointError)
    wrapped = RuntimeError("task failed")
    wrapped.cause = SelectionError("--steps: [12] not in this capture, which has 0-9")  # type: ignore[attr-defined]
    assert isinstance(_user_fault(wrapped), SelectionError)


@pytest.mark.slow
@pytest.mark.libero
def test_checkpoint_failing_inside_the_ray_actor_is_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A real local Ray: a checkpoint the driver does not see fail (its check is skipped here, as for a path that
    differs between the driver and the nodes) fails to load in the policy actor; the user gets the line `demo`
    and `serve` print (the tiny checkpoint under the full-size config), not the actor's traceback, and the --out
    folder is not created."""
    from extras import require, require_libero

    require_libero()
    require("ray", "sweep")
    monkeypatch.undo()  # the real start_ray this time
    monkeypatch.setattr(engine, "probe_policy_and_cluster", lambda settings, options: None)
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")  # a shared machine: do not kill our actor
    start = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", "--out", str(tmp_path / "run"), *SMALL, "--num-cpus", "3",
                                       "--policy", f"checkpoint:{tiny_checkpoint}"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert "config expects" in line and "Pi0Config.tiny" in line and str(tiny_checkpoint) in line, line
    assert not (tmp_path / "run").exists()
    assert time.monotonic() - start < 120
    assert not __import__("ray").is_initialized()  # shut down again


# -- 5. a refused run leaves nothing behind: the earlier run stays whole, the corrected rerun goes ahead ---------


@pytest.mark.parametrize("args", [["--episodes-per-task", "-1"], ["--steps", "10"], ["--address", "nope!"],
                                  ["--policy-gpus", "nan"], ["--policy", "ws://127.0.0.1:1"]],
                         ids=["count", "selection", "address", "gpus", "server"])
def test_refusal_over_an_earlier_run_leaves_it_byte_identical(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "run"
    (out / "episodes").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps(SweepSettings(max_calls=1).to_json()))
    (out / "episodes" / "libero_spatial_t00_e000_s7.npz").write_bytes(b"an earlier run's record")
    (out / "results.md").write_text("| task | ... |\n")
    before = snapshot(out)
    refused(out, *SMALL, *args)
    assert snapshot(out) == before


def test_the_corrected_rerun_is_not_blocked(tmp_path: Path, closed_port: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    refused(out, *SMALL, "--policy", f"ws://127.0.0.1:{closed_port}", "--steps", "9")
    refused(out, *SMALL, "--steps", "10")
    ran: list[int] = []

    def fake_run(settings: SweepSettings, options: RunOptions, store: Any, todo: list, *, open_store: Any) -> None:
        open_store()  # what the real run does once Ray and the policy are up
        ran.append(len(todo))

    monkeypatch.setattr(engine, "_run", fake_run)
    result = CliRunner().invoke(main, ["sweep", "--out", str(out), *SMALL, "--steps", "9"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert ran == [1] and json.loads((out / "run.json").read_text())["steps"] == "9"


def test_every_refusal_is_a_pi0viz_error() -> None:
    """The Python API raises pi0viz's own errors (one line) for the same arguments."""
    for settings, options in ((SweepSettings(steps="10"), {}), (SweepSettings(), {"address": "::"}),
                              (SweepSettings(), {"task_ids": "0-3,x"})):
        with pytest.raises(Pi0vizError) as err:
            check_arguments(settings, RunOptions(out="unused", **options))
        assert "\n" not in str(err.value)
