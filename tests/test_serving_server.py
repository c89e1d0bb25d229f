"""The websocket policy server with the real tiny pi0: openpi's own client, attention, errors, disconnects."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from extras import client_python
from websockets.sync.client import connect

from pi0viz.core.bundle import load_bundle
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.serving import msgpack_numpy
from pi0viz.serving.client import PolicyClient, ServerError
from pi0viz.serving.protocol import RETURN_ATTENTION_KEY
from pi0viz.serving.server import PolicyServer

pytestmark = pytest.mark.slow  # loads and compiles the tiny pi0 (~20-60 s on 2 cores)

ROOT = Path(__file__).resolve().parents[1]


class GatedPolicy:
    """The real tiny policy, plus a gate so a test can hold one call in flight (to disconnect mid-call)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.description = policy.description
        self.config = policy.config
        self.action_dims = policy.action_dims
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def infer(self, obs, **kwargs):
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        return self.policy.infer(obs, **kwargs)


@pytest.fixture(scope="module")
def served():
    from pi0viz.policy.jax_policy import Policy

    policy = GatedPolicy(Policy.tiny(seed=0))
    server = PolicyServer(policy, port=0)
    server.start_in_thread()
    yield server, policy
    server.stop()


@pytest.fixture(scope="module")
def frame():
    return load_libero_frames()[0]


def _raw_connection(port: int):
    """A bare websocket (no pi0viz client logic) and the metadata the server sent first."""
    ws = connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None).__enter__()
    metadata = msgpack_numpy.unpackb(ws.recv(timeout=30))
    return ws, metadata


def test_healthz(served) -> None:
    server, _ = served
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as resp:
        assert resp.status == 200 and resp.read() == b"OK\n"


def test_binds_loopback_by_default(served) -> None:
    server, _ = served
    assert server.host == "127.0.0.1"
    assert server._server.sockets[0].getsockname()[0] == "127.0.0.1"


def test_taken_port_is_a_clear_error(served) -> None:
    server, policy = served
    with pytest.raises(OSError):
        PolicyServer(policy, port=server.port).start_in_thread(timeout=10)


def test_actions_and_attention_with_pi0viz_client(served, frame) -> None:
    server, policy = served
    with PolicyClient("127.0.0.1", server.port) as client:
        assert client.metadata["attention"]["request_key"] == RETURN_ATTENTION_KEY
        assert client.metadata["action_horizon"] == 50
        plain = client.infer(frame.observation())
        assert plain["actions"].shape == (50, 7) and "attention_bundle" not in plain
        assert set(plain["server_timing"]) == {"infer_ms"}  # prev_total_ms only from the 2nd request on
        out = client.infer(frame.observation(), return_attention=True, inference_step=4)
    assert "prev_total_ms" in out["server_timing"] and "infer_ms" in out["policy_timing"]
    bundle = out["attention_bundle"]
    D, L, B, K, G, Q, S = bundle.attention.shape
    # tiny pi0: 10 Euler steps, 4 layers, 1 kv head x 8 heads, 51 suffix queries, 3 x 256 patches + 48 + 51 keys
    assert (D, L, B, K, G, Q, S) == (10, 4, 1, 1, 8, 51, 3 * 256 + 48 + 51)
    assert bundle.attention.dtype == np.float16
    assert bundle.inference_step == 4 and str(bundle.prompt[0]) == frame.prompt
    np.testing.assert_array_equal(bundle.images[0, 0], frame.image)
    np.testing.assert_array_equal(bundle.images[0, 1], frame.wrist_image)
    np.testing.assert_array_equal(bundle.actions[0], out["actions"])
    # Probabilities: each query row sums to 1 over the keys (float16 on the wire: ~1e-3 per entry).
    sums = bundle.attention.astype(np.float32).sum(-1)
    np.testing.assert_allclose(sums, 1.0, atol=0.02)
    # The masked third camera (LIBERO has no right wrist) gets exactly zero attention.
    assert not bundle.image_masks[0, 2]
    assert np.all(bundle.attention[..., 512:768] == 0)


def test_fused_heads_on_request(served, frame) -> None:
    server, _ = served
    with PolicyClient("127.0.0.1", server.port) as client:
        out = client.infer(frame.observation(), return_attention=True, fuse_heads=True)
    bundle = out["attention_bundle"]
    assert bundle.attention.shape == (10, 4, 1, 1, 1, 51, 867) and bundle.attention_heads == "max"
    assert np.all(bundle.attention[..., 512:768] == 0)  # the padded camera stays exactly zero


def test_real_openpi_client_in_its_own_environment(served, frame, tmp_path: Path) -> None:
    client_py = client_python()
    server, _ = served
    proc = subprocess.run([str(client_py), str(ROOT / "tests" / "openpi_client_check.py"), "--port",
                           str(server.port), "--out", str(tmp_path)], capture_output=True, text=True, timeout=240,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["numpy"].startswith("1.") and not summary["jax_imported"]
    assert summary["metadata"]["attention"]["response_prefix"] == "attention_bundle/"
    assert summary["plain_keys"] == ["actions", "policy_timing", "server_timing"]
    assert summary["plain_actions"] == [[50, 7], "<f4"]
    assert summary["attention_dtype"] == "<f2"
    assert "attention_bundle/images" in summary["attention_keys"]
    assert summary["bundle_attention_shape"][0] == 10 and summary["bundle_attention_shape"][-2:] == [51, 867]
    assert summary["bundle_prompt"] == frame.prompt and summary["bundle_images_equal_frame"]
    # The bundle rebuilt in the numpy<2 environment loads and validates here.
    bundle = load_bundle(tmp_path / "bundle.npz")
    assert bundle.attention.dtype == np.float16 and bundle.token_pieces.shape[1] == 48
    # Bytes packed by openpi-client's msgpack_numpy decode identically with pi0viz's.
    sample = msgpack_numpy.unpackb((tmp_path / "openpi_packed.bin").read_bytes())
    np.testing.assert_array_equal(sample["f16"], np.linspace(0, 1, 5, dtype=np.float16))
    assert sample["f16"].dtype == np.float16 and sample["u8"].shape == (2, 3)
    assert list(sample["s"]) == ["ab", "c"] and sample["scalar"] == np.int16(-3)


@pytest.mark.parametrize("payload, expect", [
    (b"\xc1garbage", "not valid msgpack"),
    ("a text frame", "expected a binary frame"),
    (msgpack_numpy.packb([1, 2, 3]), "expected one msgpack map"),
    (msgpack_numpy.packb({"prompt": "x"}), "missing"),
    (msgpack_numpy.packb({"observation/image": np.zeros((2, 2), np.float32)}), "missing"),
    (msgpack_numpy.packb({"prompt": "x", RETURN_ATTENTION_KEY: "yes"}), "true or false"),
    (msgpack_numpy.packb({"prompt": "x", "pi0viz/return_attn": True}), "unknown request options"),
])
def test_malformed_request_gets_error_and_connection_keeps_serving(served, frame, payload, expect) -> None:
    server, _ = served
    ws, _ = _raw_connection(server.port)
    try:
        ws.send(payload)
        reply = ws.recv(timeout=60)
        assert isinstance(reply, str) and "bad request" in reply and expect in reply
        ws.send(msgpack_numpy.packb(frame.observation()))  # same connection, next request
        ok = msgpack_numpy.unpackb(ws.recv(timeout=120))
        assert ok["actions"].shape == (50, 7)
    finally:
        ws.close()


def test_forged_object_array_is_refused(served) -> None:
    import msgpack

    server, _ = served
    forged = msgpack.packb({"observation/state": {b"__ndarray__": True, b"data": b"\x00" * 16, b"dtype": "|O",
                                                  b"shape": [2]}}, use_bin_type=True)
    ws, _ = _raw_connection(server.port)
    try:
        ws.send(forged)
        reply = ws.recv(timeout=30)
        assert isinstance(reply, str) and "not supported" in reply
    finally:
        ws.close()


def test_pi0viz_client_raises_server_error(served) -> None:
    server, _ = served
    with PolicyClient("127.0.0.1", server.port) as client:
        with pytest.raises(ServerError, match="missing"):
            client.infer({"prompt": "no images"})


def test_client_disconnecting_mid_call_does_not_hurt_others(served, frame) -> None:
    server, policy = served
    policy.gate.clear()
    policy.entered.clear()
    calls = policy.calls
    try:
        a, _ = _raw_connection(server.port)
        a.send(msgpack_numpy.packb({**frame.observation(), RETURN_ATTENTION_KEY: True}))
        assert policy.entered.wait(60), "server never started client A's inference"
        # While A's call is in flight, a new client still gets its metadata: the event loop is not blocked.
        b, meta = _raw_connection(server.port)
        assert meta["attention"]["request_key"] == RETURN_ATTENTION_KEY
        a.close()  # A leaves mid-call
    finally:
        policy.gate.set()
    try:
        b.send(msgpack_numpy.packb({**frame.observation(), RETURN_ATTENTION_KEY: True}))
        out = msgpack_numpy.unpackb(b.recv(timeout=120))
        assert out["actions"].shape == (50, 7) and out["attention_bundle/attention"].shape[-2:] == (51, 867)
    finally:
        b.close()
    assert policy.calls == calls + 2  # A's call ran to completion (its reply was dropped), then B's
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_serve_cli_tiny_starts_and_answers(tmp_path: Path) -> None:
    """`pi0viz serve --tiny --port 0`-style start-up through the real command (free port picked here)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pi0viz.cli", "serve", "--tiny", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        with PolicyClient("127.0.0.1", port, connect_timeout=180) as client:
            assert "UNTRAINED tiny pi0" in client.metadata["policy"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(30)
