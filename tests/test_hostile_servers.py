"""Nobody in (issue 20): the two servers pi0viz runs, attacked over real loopback sockets.

- `pi0viz view --serve` answers only the page and the files the page loads (its side files, its JPEG tree), to
  requests whose Host is a loopback name with the served port: no listing, no other file, no traversal in any
  spelling, no symlink out, no DNS rebinding.
- The policy server refuses frames larger than an observation can be (close 1009, from the header), browser
  pages from other sites (403 at the handshake; an allow-list flag lets one in), bounds every error text,
  guards the disk under `--record`, announces the real port for `--port 0`, blames its own faults on itself,
  numbers recorded calls without gaps, and never advises `--resume` (it has none).

Most cases run a real `PolicyServer` with a small stand-in policy (fast); the ones about the real model (a
checkpoint giving non-finite actions, 200,000 keys through LIBERO's input checks, `serve --tiny --record`) load
the tiny pi0.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from pi0viz.core.bundle import load_bundle, save_bundle
from pi0viz.errors import CheckpointError, DiskSpaceError, ObservationError, OutputError
from pi0viz.serving import msgpack_numpy
from pi0viz.serving.recorder import CallRecorder, call_bytes_estimate
from pi0viz.serving.server import MAX_ERROR_CHARS, PolicyServer, max_message_bytes

sys.path.insert(0, str(Path(__file__).parent))
from bundle_support import small  # noqa: E402
from extras import mount_tmpfs, require, unmount  # noqa: E402
from hostile_support import assert_no_temporaries, files_under, one_line_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 15 * 2**20  # max_message_bytes of a pi0 policy (3 cameras); the stand-in says no cameras: the same


# == the stand-in policy ======================================================================================


class StandIn:
    """A policy object with the server's interface: small synthetic bundles; an observation may ask it to fail.

    "fail": "observation" -> ObservationError listing the request's keys (as LIBERO's checks do);
    "internal" -> RuntimeError; "checkpoint" -> CheckpointError naming a server path (a server-side fault).
    """

    description = "stand-in"

    def __init__(self) -> None:
        self.calls = 0

    def infer(self, obs: dict[str, Any], *, return_bundle: bool = False, inference_step: int | None = None,
              capture: Any = None) -> dict[str, Any]:
        self.calls += 1
        fail = obs.get("fail")
        if fail == "observation" or "observation/state" not in obs:
            raise ObservationError(f"observation is missing ['observation/state'] (got keys {sorted(map(str, obs))})")
        if fail == "internal":
            raise RuntimeError("/srv/secret/path exploded")
        if fail == "checkpoint":
            raise CheckpointError("/srv/secret/params are corrupted")
        out: dict[str, Any] = {"actions": np.zeros((5, 7), np.float32)}
        if return_bundle:
            out["attention_bundle"] = dataclasses.replace(small(), inference_step=inference_step or 0)
        return out


GOOD = {"observation/state": np.zeros(8)}


@pytest.fixture
def policy_server(request):
    """start(**kwargs) -> a running PolicyServer on a free loopback port with the stand-in; stopped after."""
    started: list[PolicyServer] = []

    def start(**kwargs: Any) -> PolicyServer:
        srv = PolicyServer(kwargs.pop("policy", None) or StandIn(), port=0, **kwargs)
        srv.start_in_thread()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def mounts(tmp_path):
    made: list[Path] = []

    def mount(name: str, options: str) -> Path:
        made.append(mount_tmpfs(tmp_path / name, options))
        return made[-1]

    yield mount
    for path in reversed(made):
        unmount(path)


def ask(port: int, payload: bytes | str, **headers: str) -> str | bytes:
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None,
                 additional_headers=headers or None) as ws:
        ws.recv(timeout=30)  # metadata
        ws.send(payload)
        return ws.recv(timeout=60)


def packed(obs: dict) -> bytes:
    return msgpack_numpy.packb(obs)


def close_code_after_raw_frame(port: int, claimed: int, sent: int = 1024) -> tuple[int | None, float]:
    """Handshake, then write one masked binary frame header claiming `claimed` payload bytes followed by only `sent`
    bytes; returns (the server's close code, seconds until it closed)."""
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        ws.recv(timeout=30)
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, claimed) + os.urandom(4)
        start = time.monotonic()
        ws.socket.sendall(header + os.urandom(sent))
        try:
            ws.recv(timeout=30)
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd else None), time.monotonic() - start
    raise AssertionError("the server answered a frame it should have refused")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# == policy server: message size =============================================================================


def test_limit_is_sized_from_the_observation() -> None:
    class Config:
        image_keys = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
        action_dim = 32

    class Pi0Like:
        config = Config()

    # 3 float32 448 x 448 images + state + prompt, x2: 15 MiB; a LIBERO observation (0.3 MB) is 50x below it.
    assert max_message_bytes(Pi0Like()) == LIMIT == max_message_bytes(StandIn())
    libero_obs = packed({"observation/image": np.zeros((224, 224, 3), np.uint8),
                         "observation/wrist_image": np.zeros((224, 224, 3), np.uint8),
                         "observation/state": np.zeros(8), "prompt": "x" * 500})
    assert len(libero_obs) * 40 < LIMIT


@pytest.mark.parametrize("claimed", [200 * 2**20, 2**40, 2**63 - 1])
def test_a_huge_frame_is_refused_from_its_header(policy_server, claimed) -> None:
    srv = policy_server()
    code, seconds = close_code_after_raw_frame(srv.port, claimed)
    assert code == 1009 and seconds < 10  # only 1 KB of the claimed bytes was ever sent
    assert srv.policy.calls == 0
    assert ask(srv.port, packed({"fail": "observation"})).startswith("pi0viz server: bad request")  # still serving


def test_five_huge_frames_at_once_take_no_memory(policy_server) -> None:
    srv = policy_server()
    before = rss_bytes()
    results: list[tuple[int | None, float]] = []
    threads = [threading.Thread(target=lambda: results.append(close_code_after_raw_frame(srv.port, 200 * 2**20)))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [code for code, _ in results] == [1009] * 5
    assert rss_bytes() - before < 64 * 2**20  # today's server held 5 x 200 MB


def test_a_frame_over_the_limit_sent_whole_is_refused(policy_server) -> None:
    srv = policy_server()
    with connect(f"ws://127.0.0.1:{srv.port}", compression=None, max_size=None) as ws:
        ws.recv(timeout=30)
        with pytest.raises(ConnectionClosed) as closed:
            ws.send(b"\x00" * (LIMIT + 1))
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1009 and srv.policy.calls == 0


def test_a_fragmented_message_over_the_limit_is_refused(policy_server) -> None:
    srv = policy_server()
    with connect(f"ws://127.0.0.1:{srv.port}", compression=None, max_size=None) as ws:
        ws.recv(timeout=30)
        with pytest.raises(ConnectionClosed) as closed:
            ws.send(iter([b"\x00" * 2**20] * 20))  # 20 fragments of 1 MiB: each small, together over the limit
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1009 and srv.policy.calls == 0


def test_a_smaller_limit_can_be_set(policy_server) -> None:
    srv = policy_server(max_message=4096)
    code, _ = close_code_after_raw_frame(srv.port, 4097, sent=10)
    assert code == 1009


# == policy server: Origin ===================================================================================


@pytest.mark.parametrize("origin", [
    "http://evil.example", "https://evil.example:8443", "null", "http://127.0.0.1.evil.example",
    "http://localhost.evil.example", "javascript:alert(1)", "http://evil.example/path", "file://", "",
    "http://user@localhost",
])
def test_a_page_from_another_site_is_refused_at_the_handshake(policy_server, origin) -> None:
    srv = policy_server()
    with pytest.raises(InvalidStatus) as refused:
        ask(srv.port, packed(GOOD), Origin=origin)
    assert refused.value.response.status_code == 403
    body = refused.value.response.body.decode()
    assert body.startswith("pi0viz server: refused: Origin") and "--allow-origin" in body
    assert len(body.strip()) <= MAX_ERROR_CHARS and "\n" not in body.strip()
    assert srv.policy.calls == 0


def test_two_origin_headers_are_refused(policy_server) -> None:
    srv = policy_server()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     b"Origin: http://localhost\r\nOrigin: http://evil.example\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 403")


def test_health_check_from_a_foreign_page_is_refused(policy_server) -> None:
    srv = policy_server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/healthz", headers={"Origin": "http://evil.example"})
    assert conn.getresponse().status == 403


@pytest.mark.parametrize("origin", [None, "http://localhost:5173", "http://127.0.0.1", "https://[::1]:8443"])
def test_loopback_pages_and_non_browser_clients_are_let_in(policy_server, origin) -> None:
    srv = policy_server()
    reply = ask(srv.port, packed(GOOD), **({"Origin": origin} if origin else {}))
    assert isinstance(reply, bytes) and msgpack_numpy.unpackb(reply)["actions"].shape == (5, 7)


def test_allow_origin_lets_one_site_in(policy_server) -> None:
    srv = policy_server(allowed_origins=["HTTPS://Lab.Example:8443/"])
    assert isinstance(ask(srv.port, packed(GOOD), Origin="https://lab.example:8443"), bytes)
    with pytest.raises(InvalidStatus):
        ask(srv.port, packed(GOOD), Origin="https://lab.example:8444")


@pytest.mark.parametrize("value", ["lab.example", "https://lab.example/path", "ftp://lab.example", "http://"])
def test_bad_allow_origin_is_one_line(value) -> None:
    line = one_line_error("serve", "--tiny", "--allow-origin", value)
    assert "--allow-origin" in line and "scheme://host[:port]" in line


# == policy server: error texts ==============================================================================


@pytest.mark.parametrize("payload", [
    packed({f"key{i:06d}": 0 for i in range(200_000)}),  # the policy's check lists every key
    packed({**GOOD, **{f"pi0viz/typo{i}": True for i in range(50_000)}}),  # unknown options listed
    packed({"fail": "observation", "\n".join(["line"] * 1000): 1}),  # newlines from the request
])
def test_every_error_text_is_bounded(policy_server, payload) -> None:
    srv = policy_server()
    reply = ask(srv.port, payload)
    assert isinstance(reply, str) and reply.startswith("pi0viz server: bad request: ")
    assert len(reply) <= MAX_ERROR_CHARS and reply.endswith("...") and "\n" not in reply


# == policy server: whose fault =============================================================================


@pytest.mark.parametrize("fail, kind", [("internal", "RuntimeError"), ("checkpoint", "CheckpointError")])
def test_a_server_side_fault_is_not_blamed_on_the_request(policy_server, fail, kind) -> None:
    srv = policy_server()
    reply = ask(srv.port, packed({**GOOD, "fail": fail}))
    assert reply.startswith(f"pi0viz server: internal error: ({kind})") and "not of the request" in reply
    assert "bad request" not in reply and "/srv/secret" not in reply


# == policy server: --record ==================================================================================


def test_failed_requests_leave_no_gaps_in_the_numbering(policy_server, tmp_path) -> None:
    srv = policy_server(recorder=CallRecorder(tmp_path / "rec"))
    replies = [ask(srv.port, packed(obs)) for obs in (
        GOOD, {"fail": "observation"}, {**GOOD, "fail": "internal"}, GOOD, b"\xc1", {**GOOD, "pi0viz/x": 1}, GOOD)]
    assert [isinstance(r, bytes) for r in replies] == [True, False, False, True, False, False, True]
    names = [p.name for p in files_under(tmp_path / "rec") if not p.name.endswith(".observation.npz")]
    assert names == ["call_00000.npz", "call_00001.npz", "call_00002.npz"]
    assert [p.name for p in files_under(tmp_path / "rec") if p.name.endswith(".observation.npz")] == [
        n.replace(".npz", ".observation.npz") for n in names]  # each call's request next to it, no others
    assert [load_bundle(tmp_path / "rec" / "bundles" / n).inference_step for n in names] == [0, 1, 2]


def test_record_refuses_to_start_when_one_call_does_not_fit(mounts) -> None:
    disk = mounts("small", "size=1m")
    with pytest.raises(DiskSpaceError, match=r"recording one call needs about .* but only .* is free at"):
        CallRecorder(disk / "rec", call_bytes=4 * 2**20)
    assert not (disk / "rec").exists()


def test_serve_tiny_record_on_a_full_disk_is_one_line(mounts) -> None:
    require("jax", "jax")
    disk = mounts("full", "size=4m")  # the tiny pi0 writes ~28 MB per call
    line = one_line_error("serve", "--tiny", "--port", "0", "--record", disk / "rec")
    assert "recording one call needs about" in line and "is free at" in line
    assert list(disk.iterdir()) == []


def test_recording_stops_when_the_disk_fills_and_the_robot_keeps_its_actions(policy_server, mounts, caplog):
    disk = mounts("filling", "size=3m")  # one stand-in call is ~0.7 MB
    srv = policy_server(recorder=CallRecorder(disk / "rec", call_bytes=2**20))
    with caplog.at_level("ERROR", logger="pi0viz.serving.server"):
        replies = [ask(srv.port, packed(GOOD)) for _ in range(6)]
    assert all(isinstance(r, bytes) for r in replies)
    names = [p.name for p in files_under(disk / "rec") if not p.name.endswith(".observation.npz")]
    assert 1 <= len(names) < 6 and names == [f"call_{i:05d}.npz" for i in range(len(names))]
    for name in names:
        load_bundle(disk / "rec" / "bundles" / name)  # every recorded call is whole
    assert_no_temporaries(disk)
    stopped = [r.getMessage() for r in caplog.records if "recording stopped" in r.getMessage()]
    assert len(stopped) == 1 and "free space, choose another output folder" in stopped[0]
    assert srv.recorder.stopped is not None


def test_record_tree_errors_do_not_advise_resume(tmp_path) -> None:
    rec = CallRecorder(tmp_path / "rec", tree=True, workers=1)
    (tmp_path / "rec" / "attention_viz").write_text("a file where the tree goes")
    with pytest.raises(OutputError) as err:
        rec.record(small(), rec.next_index())
    text = str(err.value)
    assert "--resume" not in text and "bundle is kept" in text and "\n" not in text
    assert (tmp_path / "rec" / "bundles" / "call_00000.npz").is_file() and rec.next_index() == 1
    assert_no_temporaries(tmp_path / "rec")


def test_call_estimate_covers_a_real_call() -> None:
    b = dataclasses.replace(small(), attention=small().attention.astype(np.float16))
    assert call_bytes_estimate(StandIn()) > 100 * 2**20  # unknown policy: counted as full-size pi0
    assert call_bytes_estimate(StandIn(), tree=True) > call_bytes_estimate(StandIn())
    assert sum(np.asarray(a).nbytes for a in b.to_arrays().values()) < call_bytes_estimate(StandIn())


# == policy server: --port 0 =================================================================================


def test_port_0_announces_the_real_port(tmp_path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import pi0viz.policy.spec as spec
        from test_hostile_servers import StandIn
        spec.load_policy = lambda *a, **k: StandIn()
        from pi0viz.cli import main
        sys.argv = ["pi0viz", "serve", "--tiny", "--port", "0"]
        main()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited"
        match = re.search(r"ws://127\.0\.0\.1:(\d+) \(health: http://127\.0\.0\.1:(\d+)/healthz\)", line)
        assert match and match.group(1) == match.group(2) and match.group(1) != "0", line
        assert isinstance(ask(int(match.group(1)), packed(GOOD)), bytes)
    finally:
        proc.terminate()
        proc.wait(30)


# == policy server with the real tiny pi0 ====================================================================


@pytest.fixture(scope="module")
def tiny_policy():
    require("jax", "jax")
    from pi0viz.policy.jax_policy import Policy

    return Policy.tiny(seed=0)


def frame_obs() -> dict[str, Any]:
    from pi0viz.policy.libero_frames import load_libero_frames

    return load_libero_frames()[0].observation()


@pytest.mark.slow
def test_200000_keys_through_libero_checks_get_a_short_reply(policy_server, tiny_policy) -> None:
    srv = policy_server(policy=tiny_policy)
    reply = ask(srv.port, packed({f"key{i:06d}": 0 for i in range(200_000)}))
    assert isinstance(reply, str) and reply.startswith("pi0viz server: bad request: observation is missing")
    assert len(reply) <= MAX_ERROR_CHARS


@pytest.mark.slow
def test_non_finite_actions_are_the_servers_fault(policy_server, tiny_policy, tmp_path) -> None:
    from pi0viz.model.init import flatten, unflatten
    from pi0viz.policy.jax_policy import Policy

    flat = flatten(tiny_policy.params)
    flat["action_out_proj/kernel"] = np.full_like(np.asarray(flat["action_out_proj/kernel"]), np.nan)
    broken = Policy(unflatten(flat), tiny_policy.config, tiny_policy.transforms)
    srv = policy_server(policy=broken, recorder=CallRecorder(tmp_path / "rec"))
    reply = ask(srv.port, packed(frame_obs()))
    assert isinstance(reply, str) and reply.startswith("pi0viz server: internal error: (PolicyOutputError)")
    assert "bad request" not in reply and "not of the request" in reply
    assert files_under(tmp_path / "rec") == []  # a failed call is not recorded and takes no number
    assert srv.recorder.next_index() == 0


# == view --serve ============================================================================================


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with a page (side files, a JPEG tree beside it), a bundle, masks and a secret; served from the
    common folder of page and tree, as `pi0viz view --serve` does. Yields (server, port, folder, page URL)."""
    from pi0viz.render import RenderJob, RenderOptions, run_job
    from pi0viz.viewer import serve_viewer, write_viewer

    root = tmp_path_factory.mktemp("site")
    bundle = save_bundle(small(), root / "pages" / "call.npz")
    (root / "pages" / "masks.npz").write_bytes(bundle.read_bytes())
    (root / "secret.txt").write_text("secret")
    (root / "pages" / "notes.txt").write_text("private notes")
    run_job(RenderJob(small(), str(root / "attention_viz"), 0, RenderOptions(workers=1, steps="0", layers="0",
                                                                           action_tokens="0")))
    page = write_viewer([bundle], root / "pages" / "view.html", tree=root / "attention_viz", heads="side",
                        fused="side")
    leaf = root / "attention_viz/inference_timestep_0/diffusion_timestep_0/action_token_0/layer_0"
    (leaf / "notes.txt").write_text("not a jpeg")
    (leaf / "escape.jpg").symlink_to(root / "secret.txt")
    side = sorted((root / "pages" / "view_data").iterdir())
    assert side, "the page has side files"
    (root / "pages" / "view_data" / "zz.js").symlink_to(root / "secret.txt")  # not a chunk of the page
    side[-1].unlink()
    side[-1].symlink_to(root / "secret.txt")  # a chunk the page loads, now a symlink out of its folder
    server, url = serve_viewer(page, port=0, root=root, background=True)
    yield server, server.server_address[1], root, url
    server.shutdown()
    server.server_close()


def get(port: int, target: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    conn.endheaders()
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_the_page_and_what_it_loads_are_served(site) -> None:
    _, port, root, url = site
    assert url.endswith("/pages/view.html")
    status, body = get(port, "/pages/view.html")
    assert status == 200 and b"pi0viz-meta" in body
    served = [js for js in (root / "pages" / "view_data").glob("*.js") if not js.is_symlink()]
    assert served
    for js in served:
        status, body = get(port, f"/pages/view_data/{js.name}")
        assert status == 200 and body.startswith(b"pi0vizChunk(")
    for js in (root / "pages" / "view_data").glob("*.js"):
        if js.is_symlink():
            status, body = get(port, f"/pages/view_data/{js.name}")
            assert status == 404 and b"secret" not in body
    jpg = "/attention_viz/inference_timestep_0/diffusion_timestep_0/action_token_0/layer_0/fused_attention_on_text.jpg"
    status, body = get(port, jpg)
    assert status == 200 and body[:2] == b"\xff\xd8"
    for host in (f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert get(port, "/pages/view.html", host)[0] == 200
    status, _ = get(port, "/")
    assert status == 302


@pytest.mark.parametrize("target", [
    "/pages/", "/pages/call.npz", "/pages/masks.npz", "/pages/notes.txt", "/secret.txt", "/pages/view_data/",
    "/pages/view_data/nothing.js", "/pages/view_data/zz.js", "/../secret.txt", "/pages/../secret.txt",
    "/pages/%2e%2e/secret.txt", "/pages/%2E%2E/%2E%2E/etc/passwd", "/pages/%252e%252e/secret.txt",
    "//etc/passwd", "/etc/passwd", "/pages/view_data/..%2f..%2fsecret.txt", "/pages/view.html%00.jpg",
    "/pages\\..\\secret.txt", "http://127.0.0.1/secret.txt", "/attention_viz/",
    "/attention_viz/inference_timestep_0/diffusion_timestep_0/action_token_0/layer_0/notes.txt",
    "/attention_viz/inference_timestep_0/diffusion_timestep_0/action_token_0/layer_0/escape.jpg",
    "/attention_viz/inference_timestep_0/../../secret.txt", "/pages/view.html/", "/pages/./view.html",
    "/pages/%ff.html",
])
def test_nothing_else_of_the_folder_is_readable(site, target) -> None:
    _, port, _, _ = site
    status, body = get(port, target)
    assert status == 404, (target, status)
    assert b"secret" not in body and b"private" not in body and b"<a href" not in body


@pytest.mark.parametrize("host", [
    "evil.example:{port}", "evil.example", "127.0.0.1:1", "localhost.evil.example:{port}",
    "127.0.0.1.nip.io:{port}", "", "127.0.0.1", "0.0.0.0:{port}",
])
def test_a_foreign_host_header_is_refused(site, host) -> None:
    _, port, _, _ = site
    status, body = get(port, "/pages/view.html", host.format(port=port))
    assert status == 403 and body.startswith(b"pi0viz view: this server answers only requests for")
    assert b"pi0viz-meta" not in body


def test_two_host_headers_are_refused(site) -> None:
    _, port, _, _ = site
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /pages/view.html HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
                     "Connection: close\r\n\r\n".encode())
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.0 403") and b"pi0viz-meta" not in reply


def test_other_methods_are_refused(site) -> None:
    _, port, _, _ = site
    assert get(port, "/pages/view.html", method="POST")[0] == 501
    assert get(port, "/pages/view.html", method="PUT")[0] == 501


def test_view_serve_through_the_cli(tmp_path) -> None:
    bundle = save_bundle(small(), tmp_path / "call.npz")
    (tmp_path / "secret.txt").write_text("secret")
    proc = subprocess.Popen([sys.executable, "-m", "pi0viz.cli", "view", str(bundle), "--out",
                             str(tmp_path / "page.html"), "--serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while not line.startswith("serving") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/page\.html", line).group(1))
        assert get(port, "/page.html")[0] == 200
        assert get(port, "/call.npz")[0] == 404 and get(port, "/secret.txt")[0] == 404
        assert get(port, "/page.html", f"rebind.example:{port}")[0] == 403
    finally:
        proc.terminate()
        proc.wait(30)
