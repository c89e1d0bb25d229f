"""examples/libero/main.py in a real LIBERO environment with the tiny pi0: in-process and through the server,
and the episode views (attention video, Rerun recording).

One env is created for the module and reused (creation + reset cost ~10-15 s on 2 cores; each step ~0.3 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from extras import require, require_libero
from libero_support import CAMERA_FILES

from pi0viz.core.bundle import load_bundle

pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()


@pytest.fixture(scope="module")
def tiny_policy():
    from pi0viz.policy.jax_policy import Policy

    return Policy.tiny(seed=0)


def test_episode_in_process_renders_every_kth_call(example, scene, tiny_policy, tmp_path: Path) -> None:
    env, prompt, init_state = scene
    args = example.Args(policy="tiny", max_inference_calls=3, attention_every=2, render_steps="0,9",
                        render_layers="0,3", fuse_heads=True, viewer=True, workers=2)
    episode = tmp_path / "attention_viz" / "libero_spatial_task0_ep0"
    result = example.run_episode(env, init_state, prompt, example.InProcessPolicy(tiny_policy), args, episode,
                                 max_steps=220)
    assert result.error is None, result.error
    assert result.inference_calls == 3 and result.rendered_calls == [0, 2]
    assert result.steps == 10 + 3 * 5  # wait steps + 3 chunks of replan_steps actions
    assert len(result.frames) == 3 * 5 and not result.success

    # The tree holds exactly the rendered calls and the selected cells: 2 steps x 50 tokens x 2 layers.
    assert sorted(p.name for p in episode.glob("inference_timestep_*")) == ["inference_timestep_0",
                                                                             "inference_timestep_2"]
    for call in (0, 2):
        root = episode / f"inference_timestep_{call}"
        cells = sorted(p for p in root.glob("diffusion_timestep_*/action_token_*/layer_*") if p.is_dir())
        assert len(cells) == 2 * 50 * 2
        assert {c.parent.parent.name for c in cells} == {"diffusion_timestep_0", "diffusion_timestep_9"}
        assert {c.name for c in cells} == {"layer_0", "layer_3"}
        for cell in cells:
            assert {f.name for f in cell.iterdir()} == CAMERA_FILES
        # The bundle of the call holds what the model saw at that env step (calls come every 5 steps).
        bundle = load_bundle(episode / "bundles" / f"inference_{call:03d}.npz")
        assert bundle.inference_step == call and str(bundle.prompt[0]) == prompt
        assert bundle.attention.shape == (10, 4, 1, 1, 1, 51, 867) and bundle.attention_heads == "max"
        np.testing.assert_array_equal(bundle.images[0, 0], result.frames[5 * call])
    assert not (episode / "inference_timestep_1").exists()
    assert sorted(p.name for p in (episode / "bundles").iterdir()) == [  # each with its request (issue 23)
        "inference_000.npz", "inference_000.observation.npz", "inference_002.npz", "inference_002.observation.npz"]
    assert prompt in (episode / "viewer.html").read_text()  # --viewer: one page over the episode's calls

    video = example.write_video(result.frames, tmp_path / "videos" / "rollout.mp4")
    import imageio

    with imageio.get_reader(str(video)) as reader:
        assert reader.count_frames() == len(result.frames)


def test_episode_through_the_server_saves_bundles_only(example, scene, tiny_policy, tmp_path: Path) -> None:
    from pi0viz.serving.server import PolicyServer

    env, prompt, init_state = scene
    server = PolicyServer(tiny_policy, port=0)
    server.start_in_thread()
    try:
        policy = example.ServerPolicy("127.0.0.1", server.port)
        args = example.Args(policy="server", max_inference_calls=2, bundles_only=True)
        episode = tmp_path / "ep"
        result = example.run_episode(env, init_state, prompt, policy, args, episode, max_steps=220)
        policy.client.close()
    finally:
        server.stop()
    assert result.error is None, result.error
    assert result.rendered_calls == [0, 1]
    assert not list(episode.rglob("*.jpg"))  # --bundles-only: no JPEG tree
    for call in (0, 1):
        bundle = load_bundle(episode / "bundles" / f"inference_{call:03d}.npz")
        assert bundle.attention.dtype == np.float16  # as it came over the wire
        assert bundle.attention.shape == (10, 4, 1, 1, 8, 51, 867)
        np.testing.assert_array_equal(bundle.images[0, 0], result.frames[5 * call])


def test_episode_writes_attention_video_and_rerun_recording(example, scene, tiny_policy, tmp_path: Path) -> None:
    """--attention-video and --rerun: the MP4 and the live .rrd, decoded and checked against frames and bundles."""
    imageio = require("imageio.v2", "video")
    rr = require("rerun", "rerun")
    from pi0viz.episode import Selection, call_maps, load_frames
    from pi0viz.episode.source import load_episode
    from pi0viz.episode.video import VideoOptions, iter_frames

    calls, replan = 3, 5
    env, prompt, init_state = scene
    args = example.Args(policy="tiny", max_inference_calls=calls, fuse_heads=True, bundles_only=True,
                        attention_video=True, rerun=True)
    episode_dir = tmp_path / "libero_spatial_task0_ep0"
    result = example.run_episode(env, init_state, prompt, example.InProcessPolicy(tiny_policy), args, episode_dir,
                                 max_steps=220)
    assert result.error is None, result.error
    assert result.inference_calls == calls

    # frames.npz: every control step after the wait, both cameras; each call's frame is what its bundle saw.
    frames = load_frames(episode_dir / "frames.npz")
    assert frames.frames.shape == (calls * replan, 2, 224, 224, 3)
    assert frames.call_steps.tolist() == [replan * m for m in range(calls)]
    bundles = [load_bundle(episode_dir / "bundles" / f"inference_{m:03d}.npz") for m in range(calls)]
    for m, bundle in enumerate(bundles):
        np.testing.assert_array_equal(frames.frames[replan * m], bundle.images[0, :2])
    assert (frames.frames[1:] != frames.frames[:-1]).any(axis=(1, 2, 3, 4)).sum() >= calls  # the robot moves

    # The MP4 decodes to one frame per control step, each close to what pi0viz composed for that step
    # (camera frame of that step + that call's map + prompt + label): H.264 noise only.
    with imageio.get_reader(str(result.attention_video), format="FFMPEG") as reader:
        decoded = [np.asarray(f, np.float32) for f in reader]
    composed = list(iter_frames(load_episode([episode_dir]), VideoOptions()))
    assert len(decoded) == len(composed) == calls * replan
    for step, (got, want) in enumerate(zip(decoded, composed)):
        mse = float(((got - want) ** 2).mean())
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-6)) > 30, step  # PSNR > 30 dB
    assert np.abs(composed[0][:224, :224].astype(int) - frames.frames[0, 0]).mean() > 5  # a map was drawn over it

    # The live .rrd: every frame, and each call's heat maps and prompt mass exactly as computed from its bundle.
    recording = rr.dataframe.load_recording(str(episode_dir / "episode.rrd"))
    rows = recording.view(index="control_step", contents="/cameras/base_0_rgb/frame").select().read_all()
    assert rows.column("control_step").to_pylist() == list(range(calls * replan))
    for m, bundle in enumerate(bundles):
        want = call_maps(bundle, Selection(), call=m)
        for c, cam in enumerate(want.camera_names):
            entity = f"/cameras/{cam}/step_{want.step}/heatmap"
            table = recording.view(index="control_step", contents=entity).select().read_all()
            assert table.column("control_step").to_pylist() == [replan * k for k in range(calls)]
            (cell,) = table.column(f"{entity}:Tensor:data").to_pylist()[m]
            np.testing.assert_array_equal(np.asarray(cell["buffer"], np.float32).reshape(cell["shape"]),
                                          want.cameras[c])
        entity = f"/mass/step_{want.step}/prompt"
        table = recording.view(index="control_step", contents=entity).select().read_all()
        assert table.column(f"{entity}:Scalars:scalars").to_pylist()[m] == [float(want.mass[-1])]


def test_command_line_parses_openpi_defaults(example) -> None:
    args = example.parse_args(["--tasks", "0,3", "--policy", "tiny"])
    assert (args.num_steps_wait, args.replan_steps, args.resize_size, args.seed) == (10, 5, 224, 7)
    assert args.task_ids == "0,3" and args.task_suite_name == "libero_spatial" and args.attention
