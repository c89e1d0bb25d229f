"""pi0viz.episode's numpy core (frames, per-call aggregate, frame composition) runs without any model framework."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_episode_core_runs_with_jax_and_torch_unimportable(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        for name in ("jax", "jaxlib", "orbax", "orbax.checkpoint", "sentencepiece", "torch", "flax"):
            sys.modules[name] = None
        import numpy as np
        from pi0viz.core.synthetic import synthetic_bundle
        from pi0viz.episode import EpisodeFrames, episode_from_bundles, load_frames, save_frames
        from pi0viz.episode.video import iter_frames, VideoOptions
        b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=2, image_masks=(True, True, False))
        frames = EpisodeFrames(np.zeros((4, 2, 224, 224, 3), np.uint8), ["base_0_rgb", "left_wrist_0_rgb"], [1])
        episode = episode_from_bundles([b], load_frames(save_frames(frames, r"{tmp_path}/frames.npz")))
        shapes = {{f.shape for f in iter_frames(episode, VideoOptions())}}
        loaded = sorted(m for m, mod in sys.modules.items()
                        if mod is not None and m.split(".")[0] in ("jax", "torch", "sentencepiece", "orbax"))
        (shape,) = shapes  # one frame size for the whole video
        print(len(episode.maps), shape[1], shape[0] % 16, loaded)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "1 448 0 []"  # two 224 px cameras side by side; H.264 16 px blocks
