"""Random layouts of a libero_object scene for the reach task: every object moved to a random floor spot (or far
out of view), then settled by physics. Used by the training scenes (`pi0viz.training.reach_scenes`) and by the
sweep's reach suite (`pi0viz.sweep.reach`), so both place objects the same way.

Needs the LIBERO extra only through the env it is given (a LIBERO `OffScreenRenderEnv` of a libero_object task).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from pi0viz.policy import libero_env

# Floor rectangle (world metres) that the agentview camera sees whole and the arm reaches.
X_RANGE = (-0.22, 0.14)
Y_RANGE = (-0.28, 0.28)
MIN_GAP = 0.10  # metres between object centres
MAX_SETTLE_STEPS = 60  # control steps at most after placing
MESH = 7  # MuJoCo's mjGEOM_MESH
STILL_STEPS, STILL_M = 5, 0.002  # settled: no object in view moved more than STILL_M in STILL_STEPS steps


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


class SceneObjects:
    """The movable objects of a libero_object env: instance names, prompt labels, free joints, instance indices
    (as `pi0viz.analysis.masks.LiberoSegmenter` numbers instances). Rebuild after a hard `env.reset()`."""

    def __init__(self, env: Any) -> None:
        inner = env.env
        self.env = env
        self.names = list(inner.objects_dict)
        self.labels = [object_label(n) for n in self.names]
        self.joints = [inner.objects_dict[n].joints[0] for n in self.names]
        instances = list(inner.model.instances_to_ids)
        self.instance = [instances.index(n) for n in self.names]

    def positions(self) -> np.ndarray:
        """float64[K, 3], the objects' centres now (world metres)."""
        sim = self.env.env.sim
        return np.stack([np.array(sim.data.get_joint_qpos(j)[:3]) for j in self.joints])

    def tops(self) -> np.ndarray:
        """float64[K], how far each object's highest point stands above its centre now (metres): the highest
        vertex of the meshes of the object's body tree (and top corner of any primitive geom's box), in the world.
        `reach_task.OBJECT_TOP_M` holds these for upright objects."""
        model, data = self.env.env.sim.model, self.env.env.sim.data
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)  # [8, 3]
        tops = np.full(len(self.names), -np.inf)
        roots = [model.body_name2id(self.env.env.objects_dict[n].root_body) for n in self.names]
        for g in range(model.ngeom):
            body = int(model.geom_bodyid[g])
            while body not in roots and body != 0:
                body = int(model.body_parentid[body])
            if body == 0:
                continue
            k = roots.index(body)
            if model.geom_type[g] == MESH:  # its vertices, in the geom's frame
                start, count = model.mesh_vertadr[model.geom_dataid[g]], model.mesh_vertnum[model.geom_dataid[g]]
                points = np.asarray(model.mesh_vert[start:start + count], np.float64)
            else:  # a primitive: the corners of its box [centre 3, half sizes 3] in the geom's frame
                box = np.asarray(model.geom_aabb[g], np.float64)
                points = box[:3] + signs * box[3:]
            world = points @ np.asarray(data.geom_xmat[g]).reshape(3, 3).T + data.geom_xpos[g]
            tops[k] = max(tops[k], float(world[:, 2].max()))
        return tops - self.positions()[:, 2]

    def place(self, rng: np.random.Generator, *, solo: bool = False, keep: int | None = None,
              kinds: Sequence[str] | None = None, settle: int = libero_env.SETTLE_STEPS) -> np.ndarray:
        """Move the objects to a random layout from the env's current state (objects on the floor at least
        MIN_GAP apart, a random turn about the vertical, height and resting orientation kept), then let physics
        settle them for `settle` control steps, and on until the objects in view are still (at most
        MAX_SETTLE_STEPS), and reset robosuite's counters. `keep`: only that many random
        objects stay in view, the others go far out of every camera's view; `solo` = keep 1; `kinds`: only
        objects of these kinds (prompt labels) stay. Returns present, bool[K] (the objects in view)."""
        sim = self.env.env.sim
        n = len(self.names)
        xy = random_layout(rng, n)
        present = np.ones(n, bool)
        if kinds is not None:
            present[:] = [label in kinds for label in self.labels]
        if solo or (keep is not None and keep < n):
            present[:] = False
            kept = [int(rng.integers(n))] if solo else rng.choice(n, keep, replace=False)
            present[kept] = True
        if not present.all():
            far = np.arange(n, dtype=np.float64)
            xy[~present] = np.stack([10.0 + far, np.full_like(far, 10.0)], axis=-1)[~present]
        for joint, (x, y) in zip(self.joints, xy):
            q = np.array(sim.data.get_joint_qpos(joint), dtype=np.float64)  # [x, y, z, qw, qx, qy, qz]
            q[0], q[1] = x, y
            q[3:7] = _quat_mul(_yaw_quat(rng.uniform(-math.pi, math.pi)), q[3:7])
            sim.data.set_joint_qpos(joint, q)
            sim.data.set_joint_qvel(joint, np.zeros(6))
        sim.forward()
        libero_env.reset_counters(self.env)
        if settle:  # placed without physics: objects sink or tip in the first steps; read everything afterwards
            libero_env.settle(self.env, settle)
            # a bottle that tipped over can still roll, an object dropped on the basket's rim slide off: settle on
            # until the objects in view are still (physics only, ~25 ms a step), at most MAX_SETTLE_STEPS in all
            for _ in range(settle, MAX_SETTLE_STEPS, STILL_STEPS):
                before = self.positions()[present]
                libero_env.settle(self.env, STILL_STEPS)
                if np.abs(self.positions()[present] - before).max() < STILL_M:
                    break
        return present
