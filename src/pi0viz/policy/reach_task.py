"""The reach task: the prompt names one object of the scene; the action chunk moves the gripper to hover over it.

Action chunks are in LIBERO's action units (dims 0-2 position, 3-5 rotation, 6 gripper with -1 = open). What
a unit does was measured in the simulator (`pi0viz.training.calibrate`): held, an action of 1.0 moves the gripper
ACTION_UNIT_M = 1.25 cm per control step (x 1.17, y 1.30, z 1.29 cm over 12-step holds), not the 5 cm of the
controller's `output_max`; the controller clips actions to [-1, 1].

Two chunk makers, each from the end effector to a hover point above the object, without rotation, gripper open:
- `reach_chunk` (the shipped model's task, open loop from the home pose): a minimum-jerk profile over the whole
  chunk, nothing clipped; its sum is the whole displacement. The shipped weights were trained with the old unit
  (SHIPPED_ACTION_UNIT_M = 5 cm), so their chunks are read in it; a newer checkpoint's model.json names its own
  ("task": {"chunk", "action_unit_m"}; `reach_model.reach_task_of`), a card without one means this.
- `approach_chunk` (the closed-loop task): the next steps toward the target from wherever the arm is, each step
  covering APPROACH_GAIN of the remaining way, at most 1.0 per axis (the controller's limit), in the measured
  unit; replanned every few control steps, it arrives and stays instead of overshooting into the object. It
  hovers HOVER_M above the object's centre or CLEARANCE_M above its top, whichever is higher (`hover_height`):
  the basket's rim and the tall cartons would otherwise be hit. Closed-loop success is measured to that point.

A scene file (`pi0viz.training.reach_scenes`) holds many layouts of one libero_object task; `ReachScenes`
joins files and enumerates the (scene, named object) examples whose object is visible in the agentview camera.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pi0viz.core.npzfile import load_npz

ACTION_UNIT_M = 0.0125  # metres per control step per action unit, measured (python -m pi0viz.training.calibrate)
SHIPPED_ACTION_UNIT_M = 0.05  # the unit of the shipped weights' training chunks (OSC_POSE output_max, uncalibrated)
APPROACH_GAIN = 0.35  # approach_chunk: share of the remaining way covered per control step
MAX_ACTION = 1.0  # the controller clips each action dim to [-1, 1]
SUCCESS_RADIUS_M = 0.10  # a reach succeeds once the gripper is this close to the hover point (closed loop)
CHUNKS = ("min_jerk", "approach")  # the chunk makers by name (train_reach --chunk)
HOVER_M = 0.08  # a reach ends at least this far above the object's centre
CLEARANCE_M = 0.03  # closed loop: and at least this far above the object's top (the fingertips clear it)
# How far each kind's top stands above its centre (metres, upright), read from the meshes of libero_object's
# scenes (`reach_layout.object_tops`; tests/test_reach_hover.py re-reads them in the simulator). The basket's
# centre is its base and its rim stands 14.7 cm above it: hovering 8 cm above the centre drives into the rim.
OBJECT_TOP_M = {"alphabet soup": 0.042, "basket": 0.147, "bbq sauce": 0.057, "butter": 0.009,
                "chocolate pudding": 0.015, "cream cheese": 0.010, "ketchup": 0.074, "milk": 0.071,
                "orange juice": 0.072, "salad dressing": 0.074, "tomato sauce": 0.041}
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


def hover_height(label: str | None) -> float:
    """Metres above an object's centre where a reach ends: HOVER_M, or CLEARANCE_M above the top of the kind
    `label` where that is higher (basket 17.7 cm, the tall bottles and cartons ~10 cm). None: HOVER_M (the shipped
    open-loop task, which did not know the kinds' heights)."""
    if label is None:
        return HOVER_M
    if label not in OBJECT_TOP_M:
        raise ValueError(f"no height known for {label!r}; expected one of libero_object's kinds {sorted(OBJECT_TOP_M)}")
    return max(HOVER_M, OBJECT_TOP_M[label] + CLEARANCE_M)


def hover_point(object_pos: np.ndarray, label: str | None = None) -> np.ndarray:
    """float64[..., 3], the point `hover_height(label)` above an object's centre (world metres): where a reach
    ends, and what closed-loop success is measured to."""
    return np.asarray(object_pos, np.float64) + np.array([0.0, 0.0, hover_height(label)])


def reach_chunk(eef_pos: np.ndarray, object_pos: np.ndarray, horizon: int = HORIZON, *,
                unit_m: float = SHIPPED_ACTION_UNIT_M) -> np.ndarray:
    """float32[horizon, 7] LIBERO actions taking the end effector (world metres [3]) to hover over object_pos [3]
    on a minimum-jerk profile, in units of `unit_m` metres per action (default: the shipped model's)."""
    delta = hover_point(object_pos) - np.asarray(eef_pos, np.float64)  # [3] metres
    chunk = np.zeros((horizon, 7), np.float64)
    chunk[:, :3] = min_jerk_weights(horizon)[:, None] * delta[None] / unit_m
    chunk[:, 6] = -1.0
    return chunk.astype(np.float32)


def approach_chunk(eef_pos: np.ndarray, object_pos: np.ndarray, horizon: int = HORIZON, *,
                   label: str | None = None, unit_m: float = ACTION_UNIT_M, gain: float = APPROACH_GAIN,
                   max_action: float = MAX_ACTION) -> np.ndarray:
    """float32[horizon, 7], the next `horizon` control steps toward the hover point over object_pos (of the kind
    `label`) from eef_pos (world metres [3]): each step covers `gain` of the remaining way, scaled down (direction
    kept) so no position action exceeds `max_action`, in units of `unit_m` (default: the measured one)."""
    goal = hover_point(object_pos, label)
    pos = np.asarray(eef_pos, np.float64).copy()
    chunk = np.zeros((horizon, 7), np.float64)
    for t in range(horizon):
        step = gain * (goal - pos) / unit_m  # [3] action units
        step *= min(1.0, max_action / max(float(np.abs(step).max()), 1e-12))
        chunk[t, :3] = step
        pos += step * unit_m
    chunk[:, 6] = -1.0
    return chunk.astype(np.float32)


def make_chunk(kind: str, eef_pos: np.ndarray, object_pos: np.ndarray, *, unit_m: float,
               label: str | None = None, horizon: int = HORIZON) -> np.ndarray:
    """float32[horizon, 7] of the chunk maker `kind` (one of CHUNKS) in units of `unit_m`; the approach hovers at
    the height of the kind `label`, the shipped min-jerk task at HOVER_M whatever the kind."""
    if kind == "min_jerk":
        return reach_chunk(eef_pos, object_pos, horizon, unit_m=unit_m)
    if kind == "approach":
        return approach_chunk(eef_pos, object_pos, horizon, label=label, unit_m=unit_m)
    raise ValueError(f"unknown chunk maker {kind!r}; expected one of {CHUNKS}")


def chunk_endpoint(eef_pos: np.ndarray, chunk: np.ndarray, unit_m: float = SHIPPED_ACTION_UNIT_M) -> np.ndarray:
    """float64[..., 3], where a chunk [..., A, >=3] leaves the end effector (world metres), reading actions in units
    of `unit_m` (default: the shipped model's training unit; a model's own is `reach_model.action_unit_m`)."""
    return np.asarray(eef_pos, np.float64) + unit_m * np.asarray(chunk, np.float64)[..., :3].sum(axis=-2)


def reached(eef_pos: np.ndarray, object_pos: np.ndarray, label: str | None = None,
            radius_m: float = SUCCESS_RADIUS_M) -> bool:
    """True when the gripper (world metres [3]) is within `radius_m` of the hover point over object_pos [3]."""
    return bool(np.linalg.norm(np.asarray(eef_pos, np.float64) - hover_point(object_pos, label)) <= radius_m)


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

    def chunk(self, scene: int, obj: int, *, kind: str = "min_jerk",
              unit_m: float = SHIPPED_ACTION_UNIT_M) -> np.ndarray:
        """float32[A, 7], the target chunk of one example (`make_chunk`; default: the shipped model's task)."""
        return make_chunk(kind, self.state[scene, :3], self.positions[scene][obj], unit_m=unit_m,
                          label=self.labels[scene][obj])

    def observation(self, scene: int, obj: int) -> dict:
        """The LIBERO request a policy gets for one example (openpi's client keys)."""
        return {"observation/image": self.image[scene], "observation/wrist_image": self.wrist_image[scene],
                "observation/state": self.state[scene], "prompt": prompt_for(self.labels[scene][obj])}
