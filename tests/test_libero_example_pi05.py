"""examples/libero/main.py with the tiny pi0.5 (openpi's pi05_libero pipeline) in a real LIBERO environment:
in-process via --config pi05_libero, and through a recording server (pi0viz serve --record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from extras import require_libero
from libero_support import CAMERA_FILES

from pi0viz.core.bundle import load_bundle

pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()


def test_pi05_episode_in_process_and_through_a_recording_server(example, scene, tmp_path: Path) -> None:
    from pi0viz.serving.recorder import CallRecorder
    from pi0viz.serving.server import PolicyServer

    env, prompt, init_state = scene
    args = example.parse_args(["--policy", "tiny", "--config", "pi05_libero", "--max-inference-calls", "2",
                               "--render-steps", "9", "--render-layers", "3", "--workers", "2"])
    policy = example.make_policy(args)
    assert policy.policy.config.pi05 and policy.policy.config.action_horizon == 10
    episode = tmp_path / "in_process"
    result = example.run_episode(env, init_state, prompt, policy, args, episode, max_steps=220)
    assert result.error is None, result.error
    assert result.inference_calls == 2 and result.steps == 10 + 2 * 5  # 10-action chunks, replan every 5
    cells = sorted(p for p in (episode / "inference_timestep_1").glob("diffusion_timestep_*/action_token_*/layer_*"))
    assert len(cells) == 10  # step 9, layer 3, the 10 action tokens of a pi0.5 chunk
    for cell in cells:
        assert {f.name for f in cell.iterdir()} == CAMERA_FILES

    server = PolicyServer(policy.policy, port=0, recorder=CallRecorder(tmp_path / "rec"))
    server.start_in_thread()
    try:
        remote = example.ServerPolicy("127.0.0.1", server.port)
        served = example.run_episode(env, init_state, prompt, remote,
                                     example.Args(policy="server", max_inference_calls=2, attention=False),
                                     tmp_path / "served", max_steps=220)
        remote.client.close()
    finally:
        server.stop()
    assert served.error is None, served.error
    assert served.inference_calls == 2
    for call in (0, 1):  # the client asked for no attention; the server kept it
        bundle = load_bundle(tmp_path / "rec" / "bundles" / f"call_{call:05d}.npz")
        assert bundle.attention.shape == (10, 4, 1, 1, 8, 10, 978) and bundle.num_state_tokens == 0
        np.testing.assert_array_equal(bundle.images[0, 0], served.frames[5 * call])
