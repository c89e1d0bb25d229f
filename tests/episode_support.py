"""Shared helpers for the episode tests: a small episode whose hot patch moves from call to call."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
from pi0viz.episode import EpisodeFrames, save_frames

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # the right wrist is a padded slot, as in LIBERO
GRID = 16
# Per call: (camera slot, patch row, patch col, prompt token) that the last step's attention piles onto.
HOT = [(0, 2, 3, 4), (1, 9, 12, 7), (0, 13, 1, 2), (1, 5, 5, 9)]
CALL_STEPS = [3, 8, 13, 18]  # 3 frames before the first call, then 5 control steps per call
NUM_FRAMES = 23


def hot_call(call: int, *, layers: int = 2, actions: int = 3, heads: int = 2) -> CaptureBundle:
    """Call `call` of the episode: in its last denoising step, every layer, action token and head puts 0.6 on
    the planted camera patch and 0.3 on the planted prompt token (the rest is a thin spread)."""
    cam, row, col, token = HOT[call]
    b = synthetic_bundle(num_steps=2, num_layers=layers, num_action_tokens=actions, num_heads=heads,
                         camera_names=CAMERAS, image_masks=(True, True, False), seed=call)
    patch = b.layout.camera_region(cam).start + row * GRID + col
    text = b.layout.text_region.start + token
    for layer in range(layers):
        for a in range(actions):
            for h in range(heads):
                place_hot_key(b, step=1, layer=layer, action_token=a, head=h, key=patch, mass=0.6)
                place_hot_key(b, step=1, layer=layer, action_token=a, head=h, key=text, mass=0.3)
    b.inference_step = call
    return b


def rollout_frames() -> EpisodeFrames:
    """Gray frames whose level rises with the control step (base) or falls (wrist): each frame is identifiable."""
    steps = np.arange(NUM_FRAMES)
    frames = np.empty((NUM_FRAMES, 2, 224, 224, 3), np.uint8)
    frames[:, 0] = (60 + 4 * steps)[:, None, None, None]
    frames[:, 1] = (160 - 4 * steps)[:, None, None, None]
    return EpisodeFrames(frames, list(CAMERAS[:2]), CALL_STEPS, fps=10)


def write_episode(root: Path) -> Path:
    """An episode folder as the LIBERO example writes it: bundles/inference_NNN.npz (one per HOT call) and
    frames.npz (the rollout's frames)."""
    for call in range(len(HOT)):
        save_bundle(hot_call(call), root / "bundles" / f"inference_{call:03d}.npz")
    save_frames(rollout_frames(), root / "frames.npz")
    return root
