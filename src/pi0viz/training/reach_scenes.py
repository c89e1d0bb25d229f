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
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pi0viz.analysis.masks import LIBERO_CAMERAS, patch_coverage
from pi0viz.core.selection import parse_selection
from pi0viz.core.writes import atomic_write
from pi0viz.policy import libero_env
from pi0viz.policy.reach_layout import MIN_GAP, X_RANGE, Y_RANGE, SceneObjects, object_label  # noqa: F401
from pi0viz.policy.reach_task import ACTION_UNIT_M, DISTINCT_KINDS, approach_chunk

SUITE = "libero_object"
SUITE_TASKS = 10  # libero_object's tasks (known without loading LIBERO, for --tasks)
SCENES_FORMAT = "pi0viz.reach_scenes/1"


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
        self.objects = SceneObjects(self.env)
        self.names = self.objects.names
        self.segmenter = LiberoSegmenter(self.env)
        self.instance = self.objects.instance

    def close(self) -> None:
        self.env.close()

    def place(self, rng: np.random.Generator, solo: bool = False, keep: int | None = None,
              kinds: Sequence[str] | None = None, settle: int = libero_env.SETTLE_STEPS) -> np.ndarray:
        """Reset to a random init state and move the objects to a random layout (`SceneObjects.place`: settled by
        `settle` physics steps, robosuite's counters reset). Returns present, bool[K]."""
        self.env.set_init_state(self.init_states[int(rng.integers(len(self.init_states)))])
        return self.objects.place(rng, solo=solo, keep=keep, kinds=kinds, settle=settle)

    def positions(self) -> np.ndarray:
        """float64[K, 3], the objects' centres now (world metres)."""
        return self.objects.positions()

    def capture(self, present: np.ndarray) -> dict[str, Any]:
        """What the policy sees now (cameras rendered), the state, object positions and patch masks."""
        obs = libero_env.observe(self.env)
        request = libero_env.policy_observation(obs, prompt="")
        coverage = np.zeros((len(self.names), len(LIBERO_CAMERAS), 16, 16), np.float32)
        for c, camera in enumerate(LIBERO_CAMERAS):
            seg = self.segmenter.instances(camera)
            for k, inst in enumerate(self.instance):
                coverage[k, c] = patch_coverage(seg == inst)
        return {
            "image": request["observation/image"], "wrist_image": request["observation/wrist_image"],
            "state": request["observation/state"], "positions": self.positions(), "coverage": coverage,
            "present": present.copy(),
        }

    def scene(self, rng: np.random.Generator, solo: bool = False, keep: int | None = None,
              kinds: Sequence[str] | None = None, settle: int = libero_env.SETTLE_STEPS) -> dict[str, Any]:
        """One random layout: images, state, object names, positions and patch masks, read after `settle` physics
        steps. `keep`: only that many random objects stay on the floor in view, the others go far out of every
        camera's view (present = False); `solo` = keep 1; `kinds`: only objects of these kinds (prompt labels)
        stay."""
        return self.capture(self.place(rng, solo=solo, keep=keep, kinds=kinds, settle=settle))

    def trajectory(self, rng: np.random.Generator, *, kinds: Sequence[str] | None = None, calls: int = 8,
                   every: int = 5, detour: float = 0.5, unit_m: float = ACTION_UNIT_M) -> list[dict[str, Any]]:
        """Frames of one closed-loop reach: a random layout (settled), a random present object as the target, then
        `calls` times: capture a frame, and run `every` control steps of the scripted `approach_chunk` toward the
        target (in the measured unit) from where the arm is, plus a random detour of up to `detour` action units
        per axis (held for the call, so frames also come from off the scripted path); the first call starts from a
        random pose (a random action held for 0-12 steps). Each frame is a scene (`capture`) with "target" (the
        object reached for), "trajectory" (0) and "call" (its index); its chunk toward any visible object is a
        training example from that pose."""
        present = self.place(rng, kinds=kinds)
        target = int(rng.choice(np.flatnonzero(present)))
        libero_env.set_cameras(self.env, False)
        wander = np.zeros(7)
        wander[:3] = rng.uniform(-1, 1, 3)
        wander[6] = -1.0
        for _ in range(int(rng.integers(0, 13))):
            self.env.step(wander.tolist())
        frames = []
        for call in range(calls):
            libero_env.set_cameras(self.env, True)
            frame = self.capture(present)
            libero_env.set_cameras(self.env, False)
            frame.update(target=np.int64(target), trajectory=np.int64(0), call=np.int64(call))
            frames.append(frame)
            chunk = approach_chunk(frame["state"][:3], self.positions()[target], label=self.objects.labels[target],
                                   unit_m=unit_m).astype(np.float64)
            chunk[:every, :3] += rng.uniform(-detour, detour, 3) * float(rng.random() < 0.5)
            chunk[:, :3] = np.clip(chunk[:, :3], -1.0, 1.0)
            for action in chunk[:every]:
                self.env.step(action.tolist())
        libero_env.set_cameras(self.env, True)
        libero_env.reset_counters(self.env)
        return frames


def write_scene_file(path: Path, scenes: list[dict[str, Any]], names: list[str], *, task_id: int, seed: int) -> Path:
    """Scenes of one task (from `SceneMaker.scene`) as one .npz (written atomically): the stacked arrays, the
    objects' instance names and prompt labels [K], the task id and the seed."""
    arrays = {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}
    arrays["coverage"] = arrays["coverage"].astype(np.float16)
    return atomic_write(path, lambda f: np.savez(
        f, format=np.array(SCENES_FORMAT), task_id=np.array(task_id), seed=np.array(seed), objects=np.array(names),
        labels=np.array([object_label(n) for n in names]), **arrays))


def make_scenes(task_ids: list[int], scenes_per_task: int, seed: int, out: Path, *, solo: bool = False,
                keep: int | None = None, distinct: bool = False, loop: int | None = None, echo=print) -> list[Path]:
    """Render `scenes_per_task` layouts of every task into out/task_<id>_seed_<seed>[_solo|_keepN|_distinct].npz
    (`distinct`: only objects of DISTINCT_KINDS in view); returns the files (existing ones are kept: the cache).
    `loop` = C: instead, `scenes_per_task` closed-loop reaches of C frames each (`SceneMaker.trajectory`) into
    task_<id>_seed_<seed>_loop[_distinct].npz."""
    if loop:
        return _make_loops(task_ids, scenes_per_task, seed, out, calls=loop, distinct=distinct, echo=echo)
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


def _make_loops(task_ids: list[int], reaches: int, seed: int, out: Path, *, calls: int, distinct: bool,
                echo=print) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for task_id in task_ids:
        path = out / f"task_{task_id}_seed_{seed}_loop{'_distinct' if distinct else ''}.npz"
        files.append(path)
        if path.exists():
            continue
        start = time.monotonic()
        maker = SceneMaker(task_id)
        rng = np.random.default_rng([seed, task_id, 3, int(distinct)])  # [3]: the closed-loop files' stream
        frames = []
        for r in range(reaches):
            for f in maker.trajectory(rng, kinds=DISTINCT_KINDS if distinct else None, calls=calls):
                f["trajectory"] = np.int64(r)
                frames.append(f)
        maker.close()
        write_scene_file(path, frames, maker.names, task_id=task_id, seed=seed)
        echo(f"task {task_id}: {reaches} reaches, {len(frames)} frames ({time.monotonic() - start:.0f} s)")
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
    parser.add_argument("--loop", type=int, default=None, metavar="CALLS",
                        help="closed-loop reaches of CALLS frames each (arm poses along the way to a target)")
    args = parser.parse_args()
    tasks = parse_selection(args.tasks, range(SUITE_TASKS), "--tasks", within=SUITE)
    make_scenes(tasks, args.scenes_per_task, args.seed, args.out, solo=args.solo, keep=args.keep,
                distinct=args.distinct, loop=args.loop)


if __name__ == "__main__":
    scenes_command()
