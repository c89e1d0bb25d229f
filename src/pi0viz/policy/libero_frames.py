"""Real LIBERO camera frames that ship with pi0viz, so the demo runs offline without the simulator.

Rendered once by scripts/render_libero_frames.py with LIBERO 0.1.1 / robosuite 1.4.0 / MuJoCo 3.2.3: one
scene per task suite, after 10 wait steps, preprocessed exactly as openpi's LIBERO client does (both cameras
rotated 180 degrees, 224 x 224). Each frame loads as the observation dict a pi0 LIBERO policy takes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

FRAMES_DIR = Path(__file__).resolve().parents[1] / "assets" / "libero_frames"
MANIFEST_FORMAT = "pi0viz.libero_frames/1"


@dataclasses.dataclass(frozen=True)
class LiberoFrame:
    """One shipped scene.

    Attributes:
        name: e.g. "libero_spatial_task0".
        suite, task_id: where it comes from in the LIBERO benchmark.
        prompt: the task's language instruction.
        image: [224, 224, 3] uint8 agentview camera (rotated 180 degrees, as the model sees it).
        wrist_image: [224, 224, 3] uint8 eye-in-hand camera (rotated likewise).
        state: [8] float64 = eef position (m, 3), eef axis-angle (rad, 3), gripper joint positions (2).
    """

    name: str
    suite: str
    task_id: int
    prompt: str
    image: np.ndarray
    wrist_image: np.ndarray
    state: np.ndarray

    def observation(self) -> dict[str, Any]:
        """The LIBERO policy request for this frame (keys as in openpi's examples/libero/main.py)."""
        return {
            "observation/image": self.image,
            "observation/wrist_image": self.wrist_image,
            "observation/state": self.state,
            "prompt": self.prompt,
        }


def load_libero_frames(frames_dir: str | Path = FRAMES_DIR) -> list[LiberoFrame]:
    """Read every frame listed in `frames_dir`/manifest.json (file names from the manifest stay inside the dir)."""
    from PIL import Image

    frames_dir = Path(frames_dir)
    manifest = json.loads((frames_dir / "manifest.json").read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{frames_dir}/manifest.json: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")

    def read(name: str) -> np.ndarray:
        path = (frames_dir / name).resolve()
        if path.parent != frames_dir.resolve():
            raise ValueError(f"{frames_dir}/manifest.json names a file outside its folder: {name!r}")
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))

    return [
        LiberoFrame(
            name=str(entry["name"]),
            suite=str(entry["suite"]),
            task_id=int(entry["task_id"]),
            prompt=str(entry["prompt"]),
            image=read(entry["image"]),
            wrist_image=read(entry["wrist_image"]),
            state=np.asarray(entry["state"], dtype=np.float64),
        )
        for entry in manifest["frames"]
    ]
