"""LIBERO scenes for the reach task: libero_object's grocery scenes with every object moved to a random place.

Why libero_object: its scenes stand on the floor with no fixtures, so any spot in the arm's reach is a valid
resting place, and its ~7 objects per scene are all different kinds (libero_spatial's two identical bowls would
make "reach the bowl" ambiguous). Each scene: reset the task's env to one of its init states, then place every
object at a random floor position (at least MIN_GAP apart) with a random turn about the vertical, keeping its
height and resting orientation, and render exactly what the policy sees (both cameras rotated 180 degrees and
resized with pad to 224 x 224, as openpi's LIBERO client) plus each object's mask on the model's patch grid.

Run (needs the LIBERO extra: bash scripts/install.sh libero):
    python -m pi0viz.training.reach_scenes --out cache/reach_scenes --scenes-per-task 250 --seed 0
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pi0viz.analysis.masks import LIBERO_CAMERAS, patch_coverage
from pi0viz.core.selection import parse_selection
from pi0viz.core.writes import atomic_write
from pi0viz.policy import libero_env
from pi0viz.policy.reach_task import DISTINCT_KINDS

SUITE = "libero_object"
SUITE_TASKS = 10  # libero_object's tasks (known without loading LIBERO, for --tasks)
# Floor rectangle (world metres) that the agentview camera sees whole and the arm reaches.
X_RANGE = (-0.22, 0.14)
Y_RANGE = (-0.28, 0.28)
MIN_GAP = 0.10  # metres between object centres
SCENES_FORMAT = "pi0viz.reach_scenes/1"


def object_label(name: str) -> str:
    """LIBERO object instance name -> the words a prompt uses: "alphabet_soup_1" -> "alphabet soup"."""
    base = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
    return base.replace("_", " ")


def random_layout(rng: np.random.Generator, count: int) -> np.ndarray:
    """float64[count, 2] floor positions in X_RANGE x Y_RANGE, pairwise at least MIN_GAP apart (rejection)."""
    for _ in range(1000):
        xy = np.stack([rng.uniform(*X_RANGE, count), rng.uniform(*Y_RANGE, count)], axis=-1)
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(count)
        if d.min() >= MIN_GAP:
            return xy
    raise RuntimeError(f"could not place {count} objects {MIN_GAP} m apart")


def _yaw_quat(angle: float) -> np.ndarray:
    """(w, x, y, z) quaternion of a turn by `angle` radians about the world z axis (MuJoCo's order)."""
    return np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


class SceneMaker:
    """One libero_object task's env, reused for many random layouts of its objects."""

    def __init__(self, task_id: int) -> None:
        from pi0viz.analysis.masks import LiberoSegmenter

        self.suite = libero_env.task_suite(SUITE)
        self.env, _ = libero_env.make_env(self.suite, task_id, resolution=libero_env.ENV_RESOLUTION)
        self.task_id = task_id
        self.init_states = self.suite.get_task_init_states(task_id)
        self.env.reset()
        self.env.set_init_state(self.init_states[0])
        inner = self.env.env
        self.names = list(inner.objects_dict)
        self.joints = [inner.objects_dict[n].joints[0] for n in self.names]
        self.segmenter = LiberoSegmenter(self.env)
        instances = list(inner.model.instances_to_ids)
        self.instance = [instances.index(n) for n in self.names]

    def close(self) -> None:
        self.env.close()

    def scene(self, rng: np.random.Generator, solo: bool = False, keep: int | None = None,
              kinds: Sequence[str] | None = None) -> dict[str, Any]:
        """One random layout: images, state, object names, positions and patch masks. `keep`: only that many
        random objects stay on the floor in view, the others go far out of every camera's view (present =
        False); `solo` = keep 1; `kinds`: only objects of these kinds (prompt labels) stay."""
        inner = self.env.env
        self.env.set_init_state(self.init_states[int(rng.integers(len(self.init_states)))])
        sim = inner.sim
        xy = random_layout(rng, len(self.names))
        present = np.ones(len(self.names), bool)
        if kinds is not None:
            present[:] = [object_label(n) in kinds for n in self.names]
        if solo or (keep is not None and keep < len(self.names)):
            present[:] = False
            kept = [int(rng.integers(len(self.names)))] if solo else rng.choice(len(self.names), keep, replace=False)
            present[kept] = True
        if not present.all():
            far = np.arange(len(self.names), dtype=np.float64)
            xy[~present] = np.stack([10.0 + far, np.full_like(far, 10.0)], axis=-1)[~present]
        for joint, (x, y) in zip(self.joints, xy):
            q = np.array(sim.data.get_joint_qpos(joint), dtype=np.float64)  # [x, y, z, qw, qx, qy, qz]
            q[0], q[1] = x, y
            q[3:7] = _quat_mul(_yaw_quat(rng.uniform(-math.pi, math.pi)), q[3:7])
            sim.data.set_joint_qpos(joint, q)
            sim.data.set_joint_qvel(joint, np.zeros(6))
        sim.forward()
        obs = inner._get_observations(force_update=True)
        request = libero_env.policy_observation(obs, prompt="")
        positions = np.stack([np.array(sim.data.get_joint_qpos(j)[:3]) for j in self.joints])
        coverage = np.zeros((len(self.names), len(LIBERO_CAMERAS), 16, 16), np.float32)
        for c, camera in enumerate(LIBERO_CAMERAS):
            seg = self.segmenter.instances(camera)
            for k, inst in enumerate(self.instance):
                coverage[k, c] = patch_coverage(seg == inst)
        return {
            "image": request["observation/image"], "wrist_image": request["observation/wrist_image"],
            "state": request["observation/state"], "positions": positions, "coverage": coverage,
            "present": present,
        }


def write_scene_file(path: Path, scenes: list[dict[str, Any]], names: list[str], *, task_id: int, seed: int) -> Path:
    """Scenes of one task (from `SceneMaker.scene`) as one .npz (written atomically): the stacked arrays, the
    objects' instance names and prompt labels [K], the task id and the seed."""
    arrays = {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}
    arrays["coverage"] = arrays["coverage"].astype(np.float16)
    return atomic_write(path, lambda f: np.savez(
        f, format=np.array(SCENES_FORMAT), task_id=np.array(task_id), seed=np.array(seed), objects=np.array(names),
        labels=np.array([object_label(n) for n in names]), **arrays))


def make_scenes(task_ids: list[int], scenes_per_task: int, seed: int, out: Path, *, solo: bool = False,
                keep: int | None = None, distinct: bool = False, echo=print) -> list[Path]:
    """Render `scenes_per_task` layouts of every task into out/task_<id>_seed_<seed>[_solo|_keepN|_distinct].npz
    (`distinct`: only objects of DISTINCT_KINDS in view); returns the files (existing ones are kept: the cache)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for task_id in task_ids:
        suffix = "_solo" if solo else f"_keep{keep}" if keep else "_distinct" if distinct else ""
        path = out / f"task_{task_id}_seed_{seed}{suffix}.npz"
        files.append(path)
        if path.exists():
            continue
        start = time.monotonic()
        maker = SceneMaker(task_id)
        # the generator's seed: [seed, task] for full scenes, + [1] for solo, + [0, keep] for keep, + [2] distinct
        rng = np.random.default_rng([seed, task_id] + ([1] if solo else [0, keep] if keep else [2] if distinct else []))
        kinds = DISTINCT_KINDS if distinct else None
        scenes = [maker.scene(rng, solo=solo, keep=keep, kinds=kinds) for _ in range(scenes_per_task)]
        maker.close()
        write_scene_file(path, scenes, maker.names, task_id=task_id, seed=seed)
        echo(f"task {task_id}: {scenes_per_task} scenes of {maker.names} ({time.monotonic() - start:.0f} s)")
    return files


def scenes_command() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("cache/reach_scenes"))
    parser.add_argument("--tasks", default="0-9", help="libero_object task ids, e.g. 0-9 or 0,3")
    parser.add_argument("--scenes-per-task", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--solo", action="store_true", help="one object in view per scene (the curriculum's start)")
    parser.add_argument("--keep", type=int, default=None, help="only this many objects in view per scene")
    parser.add_argument("--distinct", action="store_true", help="only objects of DISTINCT_KINDS in view")
    args = parser.parse_args()
    tasks = parse_selection(args.tasks, range(SUITE_TASKS), "--tasks", within=SUITE)
    make_scenes(tasks, args.scenes_per_task, args.seed, args.out, solo=args.solo, keep=args.keep,
                distinct=args.distinct)


if __name__ == "__main__":
    scenes_command()
