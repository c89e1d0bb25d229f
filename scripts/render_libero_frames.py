"""Render the LIBERO frames that ship in src/pi0viz/assets/libero_frames/ (run once; needs the LIBERO extra).

    bash scripts/install.sh libero
    .venv/bin/python scripts/render_libero_frames.py [--out src/pi0viz/assets/libero_frames]

For each scene: the env of the task (256 x 256 cameras), reset, the first benchmark init state, 10 "wait"
steps with the dummy action (as openpi's LIBERO example does before its first query), then the observation
exactly as openpi's client sends it: agentview and eye-in-hand images rotated 180 degrees and resized to
224 x 224, the 8-d state, the task's language prompt. Images are written as high-quality JPEGs, the rest to
manifest.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np
import simplejpeg

from pi0viz.policy import libero_env
from pi0viz.policy.libero_frames import MANIFEST_FORMAT

# (suite, task id): one scene per suite, chosen for visibly different layouts.
SCENES = [("libero_spatial", 0), ("libero_object", 0), ("libero_goal", 0), ("libero_10", 0)]
WAIT_STEPS = 10
JPEG_QUALITY = 95  # ~30 KB per 224 x 224 frame; visually lossless at the model's input size


def render_scene(suite_name: str, task_id: int, out: Path) -> dict:
    """Render one scene, write its two JPEGs into `out`; return its manifest entry."""
    suite = libero_env.task_suite(suite_name)
    env, prompt = libero_env.make_env(suite, task_id, seed=7)
    try:
        env.reset()
        obs = env.set_init_state(suite.get_task_init_states(task_id)[0])
        for _ in range(WAIT_STEPS):
            obs, _, _, _ = env.step(list(libero_env.DUMMY_ACTION))
        request = libero_env.policy_observation(obs, prompt)
    finally:
        env.close()
    name = f"{suite_name}_task{task_id}"
    files = {}
    for key, suffix in (("observation/image", "agentview"), ("observation/wrist_image", "wrist")):
        files[key] = f"{name}_{suffix}.jpg"
        (out / files[key]).write_bytes(simplejpeg.encode_jpeg(request[key], quality=JPEG_QUALITY, colorspace="RGB"))
    return {
        "name": name,
        "suite": suite_name,
        "task_id": task_id,
        "init_state": 0,
        "wait_steps": WAIT_STEPS,
        "prompt": prompt,
        "state": [round(float(v), 6) for v in request["observation/state"]],
        "image": files["observation/image"],
        "wrist_image": files["observation/wrist_image"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "src/pi0viz/assets/libero_frames")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    frames = []
    for suite_name, task_id in SCENES:
        start = time.monotonic()
        frames.append(render_scene(suite_name, task_id, args.out))
        print(f"{suite_name} task {task_id}: {frames[-1]['prompt']!r} ({time.monotonic() - start:.1f} s)", flush=True)
    versions = {p: importlib.metadata.version(p) for p in ("libero", "robosuite", "mujoco", "numpy")}
    manifest = {
        "format": MANIFEST_FORMAT,
        "made_by": "scripts/render_libero_frames.py",
        "camera_resolution": libero_env.ENV_RESOLUTION,
        "image_size": libero_env.MODEL_RESOLUTION,
        "preprocessing": "rotated 180 degrees, resized with pad to 224 x 224, as openpi examples/libero/main.py",
        "state_layout": "eef_pos[3], eef axis-angle[3], gripper_qpos[2]",
        "jpeg_quality": JPEG_QUALITY,
        "versions": versions,
        "frames": frames,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {len(frames)} scenes to {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
