"""pi0-FAST behind the websocket server: openpi's own client (from .venv-client) gets actions and the decoding bundle,
`--record` keeps decoding bundles, and `pi0viz serve --tiny --config pi0_fast_libero` starts and answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from extras import client_python

from pi0viz.core.decode_bundle import DECODE_FORMAT, load_decode_bundle
from pi0viz.core.runs import load_call
from pi0viz.policy.fast_policy import FastPolicy
from pi0viz.serving.client import PolicyClient
from pi0viz.serving.recorder import CallRecorder, call_bytes_estimate
from pi0viz.serving.server import PolicyServer

pytestmark = pytest.mark.slow  # compiles the tiny pi0-FAST and starts a server process (~30-60 s on 2 cores)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    policy = FastPolicy.tiny(seed=0)
    record = tmp_path_factory.mktemp("record")
    server = PolicyServer(policy, port=0, recorder=CallRecorder(record, call_bytes=call_bytes_estimate(policy)))
    server.start_in_thread()
    yield server, policy, record
    server.stop()


def test_real_openpi_client_gets_actions_and_the_decoding_bundle(served, tmp_path: Path) -> None:
    server, policy, record = served
    proc = subprocess.run([str(client_python()), str(ROOT / "tests" / "openpi_client_fast_check.py"), "--port",
                           str(server.port), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["jax_imported"]
    meta = summary["metadata"]
    assert meta["attention"]["bundle_format"] == DECODE_FORMAT and "pi0-FAST" in meta["policy"]
    assert meta["action_horizon"] == 10 and meta["action_dims"] == 7
    assert summary["plain_keys"] == ["actions", "policy_timing", "server_timing"]  # openpi's keys, nothing else
    assert summary["plain_actions"] == [[10, 7], "<f4"]
    assert summary["plain_actions_values"] == summary["attention_actions_values"]  # capture changes nothing
    assert summary["bundle_is_decoding"] and summary["attention_dtype"] == "<f2"
    config = policy.config
    j = len(summary["generated_ids"])
    assert summary["bundle_attention_shape"] == [j, config.llm.depth, 1, 1, config.llm.num_heads, 1,
                                                 config.prefix_len + j]
    # The bundle rebuilt in the numpy<2 environment loads here and matches the policy run in this process.
    bundle = load_decode_bundle(tmp_path / "bundle.npz")
    direct = policy.infer(load_frame_obs(), return_bundle=True)["attention_bundle"]
    np.testing.assert_array_equal(bundle.generated_ids, direct.generated_ids)
    np.testing.assert_allclose(bundle.attention.astype(np.float32), direct.attention, atol=1e-3)
    assert bundle.prompt[0] == summary["bundle_prompt"]
    # --record: both calls were written, as decoding bundles in float16, whatever the client asked.
    calls = sorted((record / "bundles").glob("call_?????.npz"))  # not the .observation.npz beside them
    assert [p.name for p in calls] == ["call_00000.npz", "call_00001.npz"]
    recorded = load_call(calls[0])
    assert recorded.attention.dtype == np.float16 and recorded.inference_step == 0
    np.testing.assert_array_equal(recorded.generated_ids, bundle.generated_ids)


def load_frame_obs() -> dict:
    from pi0viz.policy.libero_frames import load_libero_frames

    return load_libero_frames()[0].observation()


def test_call_bytes_estimate_counts_decode_steps(served) -> None:
    _, policy, _ = served
    config = policy.config
    attention = config.max_decoding_steps * config.llm.depth * config.llm.num_heads * config.cache_len * 2
    assert attention < call_bytes_estimate(policy) < attention + 3 * 224 * 224 * 3 + 128 * 1024


def test_serve_cli_tiny_fast_starts_and_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pi0viz.cli", "serve", "--tiny", "--config", "pi0_fast_libero",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    try:
        with PolicyClient("127.0.0.1", port, connect_timeout=180) as client:
            assert "UNTRAINED tiny pi0-FAST" in client.metadata["policy"]
            assert client.metadata["attention"]["bundle_format"] == DECODE_FORMAT
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_cli_refuses_a_fast_tokenizer_without_a_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pi0viz.cli", "serve", "--tiny", "--config", "pi0_fast_libero",
                           "--fast-tokenizer", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "FAST tokenizer goes with policy checkpoint:DIR" in lines[0]


def test_record_tree_renders_decoding_bundles(served, tmp_path: Path) -> None:
    _, policy, _ = served
    bundle = policy.infer(load_frame_obs(), return_bundle=True)["attention_bundle"]
    recorder = CallRecorder(tmp_path, tree=True)
    path = recorder.record(bundle, recorder.next_index())
    assert load_decode_bundle(path).attention.dtype == np.float16
    steps = sorted(p.name for p in (tmp_path / "attention_viz" / "inference_timestep_0").iterdir())
    assert len(steps) == bundle.num_generated and "decode_step_0" in steps
    last_layer = f"layer_{policy.config.llm.depth - 1}"
    cell = tmp_path / "attention_viz" / "inference_timestep_0" / "decode_step_0" / last_layer
    assert (cell / "fused_attention_on_text.jpg").stat().st_size > 0
