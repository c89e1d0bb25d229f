"""`pi0viz serve --record`: openpi's own client (unchanged, in its own environment) drives a tiny pi0.5 server
that writes every call's capture bundle on its side."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from extras import client_python

from pi0viz.core.bundle import load_bundle
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.serving.recorder import CallRecorder
from pi0viz.serving.server import PolicyServer

pytestmark = pytest.mark.slow  # compiles the tiny pi0.5 (~20-60 s on 2 cores)

ROOT = Path(__file__).resolve().parents[1]


def test_openpi_client_gets_actions_and_the_server_records_pi05_bundles(tmp_path: Path) -> None:
    client_py = client_python()
    from pi0viz.policy.jax_policy import Policy

    policy = Policy.tiny(seed=0, policy_config="pi05_libero")
    server = PolicyServer(policy, port=0, recorder=CallRecorder(tmp_path / "rec"))
    server.start_in_thread()
    frame = load_libero_frames()[1]
    obs = frame.observation()
    np.savez(tmp_path / "obs.npz", **{k: np.asarray(v) for k, v in obs.items()})
    try:
        proc = subprocess.run([str(client_py), str(ROOT / "tests" / "openpi_client_record_check.py"), "--port",
                               str(server.port), "--obs", str(tmp_path / "obs.npz"), "--calls", "2", "--out",
                               str(tmp_path / "client.npz")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "client.npz", allow_pickle=False)
    assert int(got["action_horizon"]) == 10
    paths = sorted((tmp_path / "rec" / "bundles").glob("call_?????.npz"))
    assert [p.name for p in paths] == ["call_00000.npz", "call_00001.npz"]
    from pi0viz.causal.observation import load_observation
    from pi0viz.core.observation_file import observation_path
    for i, path in enumerate(paths):
        bundle = load_bundle(path)
        assert bundle.inference_step == i
        assert bundle.attention.shape == (10, 4, 1, 1, 8, 10, 968 + 10) and bundle.attention.dtype == np.float16
        assert bundle.num_state_tokens == 0 and bundle.num_action_tokens == 10
        # The recorded call is the one the client got: same actions, same images, same prompt.
        assert got[f"actions_{i}"].shape == (10, 7)
        np.testing.assert_array_equal(bundle.actions[0], got[f"actions_{i}"])
        np.testing.assert_array_equal(bundle.images[0, 0], frame.image)
        np.testing.assert_array_equal(bundle.images[0, 1], frame.wrist_image)
        assert str(bundle.prompt[0]) == frame.prompt
        assert np.all(bundle.attention[..., 512:768] == 0)  # LIBERO's absent right wrist
        # next to it, the request as the server got it: the robot state the bundle does not hold
        saved = load_observation(observation_path(path))
        assert saved["prompt"] == frame.prompt
        np.testing.assert_array_equal(saved["observation/state"], obs["observation/state"])
        np.testing.assert_array_equal(saved["observation/image"], frame.image)
    # Different noise per call (the policy RNG advances), so the two recorded calls differ.
    assert not np.array_equal(got["actions_0"], got["actions_1"])


def test_recorder_continues_numbering(tmp_path: Path) -> None:
    (tmp_path / "bundles").mkdir()
    (tmp_path / "bundles" / "call_00007.npz").write_bytes(b"")
    rec = CallRecorder(tmp_path)
    # issue 20: a number is taken only when the call's bundle is written (failed calls leave no gap)
    assert (rec.next_index(), rec.next_index()) == (8, 8)
    from bundle_support import small

    rec.record(small(), 8)
    assert rec.next_index() == 9 and (tmp_path / "bundles" / "call_00008.npz").is_file()


def test_recorder_saves_each_calls_request_next_to_its_bundle(tmp_path: Path) -> None:
    """The observation side file (pi0viz.observation/1) that `pi0viz knockout --bundle` reads the state from; the
    runs reader attaches it to its call. A request that cannot be stored is one line and the bundle is kept."""
    from bundle_support import small

    from pi0viz.causal.observation import load_observation
    from pi0viz.core.observation_file import observation_path
    from pi0viz.core.runs import read_run
    from pi0viz.errors import ConfigError

    rec = CallRecorder(tmp_path)
    request = {"observation/image": np.full((4, 4, 3), 7, np.uint8), "observation/state": np.arange(8.0),
               "prompt": "pick up the bowl"}
    path = rec.record(small(), 0, observation=request)
    saved = load_observation(observation_path(path))
    assert saved["prompt"] == "pick up the bowl" and sorted(saved) == sorted(request)
    np.testing.assert_array_equal(saved["observation/state"], np.arange(8.0))
    [call] = read_run(tmp_path).calls
    assert call.path == path and call.observation == observation_path(path)
    with pytest.raises(ConfigError, match="observation key 'nested' holds objects") as err:
        rec.record(small(), 1, observation={"nested": {"a": 1}})
    assert "\n" not in str(err.value) and (tmp_path / "bundles" / "call_00001.npz").is_file()
    assert rec.next_index() == 2
