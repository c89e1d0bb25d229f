"""A real LIBERO episode with the tiny pi0 yields the attention video and the Rerun recording; both are decoded
and checked against the episode's own frames and capture bundles."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pi0viz.policy import libero_env
from pi0viz.core.bundle import load_bundle

pytestmark = [pytest.mark.libero, pytest.mark.slow]
if not libero_env.libero_installed():
    pytest.skip("LIBERO extra not installed: bash scripts/install-libero.sh (CI installs it via scripts/test.sh)",
                allow_module_level=True)
imageio = pytest.importorskip("imageio.v2", reason="the [video] extra: bash scripts/install-episode.sh")
rr = pytest.importorskip("rerun", reason="the [rerun] extra: bash scripts/install-episode.sh")

ROOT = Path(__file__).resolve().parents[1]
CALLS, REPLAN = 3, 5


def _load_example():
    spec = importlib.util.spec_from_file_location("libero_example_episode", ROOT / "examples" / "libero" / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def test_libero_episode_writes_video_and_recording(tmp_path: Path) -> None:
    from pi0viz.episode import Selection, call_maps, load_frames
    from pi0viz.episode.source import load_episode
    from pi0viz.episode.video import VideoOptions, iter_frames
    from pi0viz.policy.jax_policy import Policy

    example = _load_example()
    suite = libero_env.task_suite("libero_spatial")
    env, prompt = libero_env.make_env(suite, 0, seed=7)
    try:
        args = example.Args(policy="tiny", max_inference_calls=CALLS, fuse_heads=True, bundles_only=True,
                            attention_video=True, rerun=True)
        episode_dir = tmp_path / "libero_spatial_task0_ep0"
        result = example.run_episode(env, suite.get_task_init_states(0)[0], prompt,
                                     example.InProcessPolicy(Policy.tiny(seed=0)), args, episode_dir, max_steps=220)
    finally:
        env.close()
    assert result.error is None, result.error
    assert result.inference_calls == CALLS

    # frames.npz: every control step after the wait, both cameras; each call's frame is what its bundle saw.
    frames = load_frames(episode_dir / "frames.npz")
    assert frames.frames.shape == (CALLS * REPLAN, 2, 224, 224, 3)
    assert frames.call_steps.tolist() == [REPLAN * m for m in range(CALLS)]
    bundles = [load_bundle(episode_dir / "bundles" / f"inference_{m:03d}.npz") for m in range(CALLS)]
    for m, bundle in enumerate(bundles):
        np.testing.assert_array_equal(frames.frames[REPLAN * m], bundle.images[0, :2])
    assert (frames.frames[1:] != frames.frames[:-1]).any(axis=(1, 2, 3, 4)).sum() >= CALLS  # the robot moves

    # The MP4 decodes to one frame per control step, each close to what pi0viz composed for that step
    # (camera frame of that step + that call's map + prompt + label): H.264 noise only.
    with imageio.get_reader(str(result.attention_video), format="FFMPEG") as reader:
        decoded = [np.asarray(f, np.float32) for f in reader]
    composed = list(iter_frames(load_episode([episode_dir]), VideoOptions()))
    assert len(decoded) == len(composed) == CALLS * REPLAN
    for step, (got, want) in enumerate(zip(decoded, composed)):
        mse = float(((got - want) ** 2).mean())
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-6)) > 30, step  # PSNR > 30 dB
    assert np.abs(composed[0][:224, :224].astype(int) - frames.frames[0, 0]).mean() > 5  # a map was drawn over it

    # The live .rrd: every frame, and each call's heat maps, bars and masses exactly as computed from its bundle.
    recording = rr.dataframe.load_recording(str(episode_dir / "episode.rrd"))
    rows = recording.view(index="control_step", contents="/cameras/base_0_rgb/frame").select().read_all()
    assert rows.column("control_step").to_pylist() == list(range(CALLS * REPLAN))
    for m, bundle in enumerate(bundles):
        want = call_maps(bundle, Selection(), call=m)
        for c, cam in enumerate(want.camera_names):
            entity = f"/cameras/{cam}/step_{want.step}/heatmap"
            table = recording.view(index="control_step", contents=entity).select().read_all()
            assert table.column("control_step").to_pylist() == [REPLAN * k for k in range(CALLS)]
            (cell,) = table.column(f"{entity}:Tensor:data").to_pylist()[m]
            np.testing.assert_array_equal(np.asarray(cell["buffer"], np.float32).reshape(cell["shape"]),
                                          want.cameras[c])
        entity = f"/mass/step_{want.step}/prompt"
        table = recording.view(index="control_step", contents=entity).select().read_all()
        assert table.column(f"{entity}:Scalars:scalars").to_pylist()[m] == [float(want.mass[-1])]
