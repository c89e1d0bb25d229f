"""The reach task: the prompt names one object of the scene; the action chunk moves the gripper to hover over it.

Action chunks are in LIBERO's action units (OSC_POSE: 1.0 = 5 cm of end-effector travel in one control step;
dims 0-2 position deltas, 3-5 rotation deltas, 6 gripper with -1 = open). A chunk of A steps follows a
minimum-jerk profile from the end effector to HOVER_M above the object's centre, without rotation, gripper
open, so the action tokens differ (slow, fast, slow) and their sum is the whole displacement. Nothing is
clipped: this is a task for grounding, not a controller.

A scene file (`pi0viz.training.reach_scenes`) holds many layouts of one libero_object task; `ReachScenes`
joins files and enumerates the (scene, named object) examples whose object is visible in the agentview camera.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pi0viz.core.npzfile import load_npz

ACTION_UNIT_M = 0.05  # metres of end-effector travel per action unit (robosuite OSC_POSE output_max)
HOVER_M = 0.08  # the chunk ends this far above the object's centre
HORIZON = 10  # A, action tokens per chunk
MIN_VISIBLE_PATCHES = 0.25  # a target must cover at least this much of the agentview's 16 x 16 patch grid
# The object kinds of the shipped model's scenes: the five of libero_object's eleven that look most unlike each
# other at ~1 patch of 14 x 14 pixels (a beige woven basket, a blue can, a clear bottle with a green cap, a red
# carton, an orange carton). The others are mostly red or brown cans and bottles that a 0.45 M model at this
# resolution did not tell apart (docs/reach_tiny.md).
DISTINCT_KINDS = ("basket", "alphabet soup", "salad dressing", "milk", "orange juice")


def prompt_for(label: str) -> str:
    """The task prompt naming one object: "reach the alphabet soup"."""
    return f"reach the {label}"


def min_jerk_weights(horizon: int = HORIZON) -> np.ndarray:
    """float64[horizon], the share of the displacement covered in each step of a minimum-jerk reach (sum 1)."""
    s = np.linspace(0.0, 1.0, horizon + 1)
    return np.diff(10 * s**3 - 15 * s**4 + 6 * s**5)


def reach_chunk(eef_pos: np.ndarray, object_pos: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """float32[horizon, 7] LIBERO actions taking the end effector (world metres [3]) to hover over object_pos [3]."""
    goal = np.asarray(object_pos, np.float64) + np.array([0.0, 0.0, HOVER_M])
    delta = goal - np.asarray(eef_pos, np.float64)  # [3] metres
    chunk = np.zeros((horizon, 7), np.float64)
    chunk[:, :3] = min_jerk_weights(horizon)[:, None] * delta[None] / ACTION_UNIT_M
    chunk[:, 6] = -1.0
    return chunk.astype(np.float32)


def chunk_endpoint(eef_pos: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """float64[..., 3], where a chunk [..., A, >=3] leaves the end effector (world metres)."""
    return np.asarray(eef_pos, np.float64) + ACTION_UNIT_M * np.asarray(chunk, np.float64)[..., :3].sum(axis=-2)


@dataclasses.dataclass
class ReachScenes:
    """Scenes of one or more scene files, flattened.

    Attributes:
        image, wrist_image: uint8[N, 224, 224, 3], what the model sees (rotated, resized with pad).
        state: float64[N, 8], LIBERO's state (eef position first).
        labels: per scene, the prompt words of its K objects (K may differ between files).
        positions: per scene, float64[K, 3] object centres (world metres).
        coverage: per scene, float32[K, 2, 16, 16] covered fraction of each patch (agentview, wrist).
        present: per scene, bool[K], the objects in view (solo scenes keep one).
        examples: int[E, 2] (scene, object) pairs whose object is present and visible in the agentview.
    """

    image: np.ndarray
    wrist_image: np.ndarray
    state: np.ndarray
    labels: list[list[str]]
    positions: list[np.ndarray]
    coverage: list[np.ndarray]
    present: list[np.ndarray]
    examples: np.ndarray

    @classmethod
    def load(cls, files: Sequence[str | Path]) -> "ReachScenes":
        images, wrists, states, labels, positions, coverage, present = [], [], [], [], [], [], []
        for f in files:
            z = load_npz(f)  # guarded reader: headers checked first, no pickle
            n = z["image"].shape[0]
            images.append(z["image"])
            wrists.append(z["wrist_image"])
            states.append(z["state"])
            names_of = z["labels"]  # [K] for a task's file, [N, K] for a joined file (the shipped scenes)
            rows = names_of if names_of.ndim == 2 else [names_of] * n
            labels += [[str(x) for x in row] for row in rows]
            positions += list(z["positions"])
            coverage += list(z["coverage"].astype(np.float32))
            present += list(z["present"]) if "present" in z else [np.ones(len(r), bool) for r in rows]
        if not labels:
            raise ValueError(f"no scenes in {list(map(str, files))}")
        examples = [(i, k) for i in range(len(labels)) for k in range(len(labels[i]))
                    if present[i][k] and coverage[i][k, 0].sum() >= MIN_VISIBLE_PATCHES]
        return cls(np.concatenate(images), np.concatenate(wrists), np.concatenate(states), labels, positions,
                   coverage, present, np.asarray(examples, np.int64).reshape(-1, 2))

    def __len__(self) -> int:
        return len(self.labels)

    def chunk(self, scene: int, obj: int) -> np.ndarray:
        """float32[A, 7], the target chunk of one example."""
        return reach_chunk(self.state[scene, :3], self.positions[scene][obj])

    def observation(self, scene: int, obj: int) -> dict:
        """The LIBERO request a policy gets for one example (openpi's client keys)."""
        return {"observation/image": self.image[scene], "observation/wrist_image": self.wrist_image[scene],
                "observation/state": self.state[scene], "prompt": prompt_for(self.labels[scene][obj])}
