"""The sweep's reach suite (`pi0viz sweep --suite reach --policy reach-tiny`): reach-tiny's task in closed loop.

An episode (suite "reach", task t = libero_object task t, trial k, seed s) resets task t's env, takes one of its
init states and moves its objects to a random layout (`pi0viz.policy.reach_layout`: the objects of reach-tiny's
DISTINCT_KINDS on the floor, the others out of view), all drawn from the episode key, so the same key gives the
same scene anywhere; physics settles the objects (`num_steps_wait` control steps) and robosuite's counters are
reset. The prompt names one object in view (at least MIN_VISIBLE_PATCHES of the agentview's patches), drawn from
the key. The policy is called every `replan_steps` control steps; the episode succeeds once the gripper comes
within SUCCESS_RADIUS_M of the named object's hover point (`reach_task.hover_point`: HOVER_M above its current
centre, or CLEARANCE_M above its top where that is higher, so the basket's rim is not hit) (as LIBERO counts "done
once reached") but runs on to max_steps (REACH_MAX_STEPS by default), so the record also says whether the arm
stayed near the target ("near_at_end", "final_distance_cm") or pushed it away ("target_moved_cm").

Grounding: every call's masks are split into the named object (the usual metric names) and the other objects in
view ("others." + name), so the results compare attention on the target with attention on the distractors, by
outcome. The outcome adds the named object's label, the closest and final distance to its hover point and how far
the object was pushed.

Baselines (`--reach-baseline`, same episodes): "untrained" (reach-tiny's config at its initial weights, the same
norm stats), "prompt-blind" (the scripted approach toward the mean position of the objects in view: knows the
scene, not which object is meant) and "scripted" (the scripted approach toward the named object, in the measured
action unit). The scripted ones make no inference call and record no attention.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pi0viz.policy import libero_env
from pi0viz.policy.reach_task import (ACTION_UNIT_M, DISTINCT_KINDS, MIN_VISIBLE_PATCHES, HOVER_M,
                                      SUCCESS_RADIUS_M, approach_chunk, hover_point, prompt_for)
from pi0viz.sweep.plan import REACH_BASELINES, REACH_MAX_STEPS, REACH_SUITE, EpisodeKey  # noqa: F401

BASE_SUITE = "libero_object"  # the scenes of the reach suite
REACH_TASKS = 10
SCRIPTED = ("prompt-blind", "scripted")  # baselines that need no policy call
OTHERS_PREFIX = "others."


class ReachEpisode:
    """One reach episode's scene in a freshly reset env: layout, named object, success and masks.

    Args:
        env: the libero_object task's env, just reset. init_states: the task's init states. key: the episode.
        settle: physics steps after placing (robosuite's counters reset after them). segmenter: the episode's
            `LiberoSegmenter` (None: no grounding).
    """

    def __init__(self, env: Any, init_states: np.ndarray, key: EpisodeKey, *, settle: int,
                 segmenter: Any = None) -> None:
        from pi0viz.analysis.masks import patch_coverage
        from pi0viz.policy.reach_layout import SceneObjects

        rng = np.random.default_rng([key.seed, key.task, key.trial, 24])  # 24: the reach suite's stream
        env.set_init_state(init_states[int(rng.integers(len(init_states)))])
        self.env = env
        self.objects = SceneObjects(env)
        self.present = self.objects.place(rng, kinds=DISTINCT_KINDS, settle=settle)
        self.segmenter = segmenter
        self.obs = libero_env.observe(env)
        if segmenter is not None:
            agent = segmenter.instances("agentview")
        else:
            from pi0viz.analysis.masks import LiberoSegmenter

            agent = LiberoSegmenter(env).instances("agentview")
        area = np.array([patch_coverage(agent == i).sum() for i in self.objects.instance])
        visible = np.flatnonzero(self.present & (area >= MIN_VISIBLE_PATCHES))
        if not len(visible):
            visible = np.flatnonzero(self.present)
        self.target = int(rng.choice(visible))
        self.label = self.objects.labels[self.target]
        self.prompt = prompt_for(self.label)
        self.start = self.objects.positions()
        self.distances: list[float] = []

    def step_done(self, obs: dict[str, np.ndarray]) -> bool:
        """After a control step: record the gripper's distance to the hover point; True once it is reached."""
        goal = hover_point(self.objects.positions()[self.target], self.label)
        d = float(np.linalg.norm(np.asarray(obs["robot0_eef_pos"]) - goal))
        self.distances.append(d)
        return d <= SUCCESS_RADIUS_M

    def scripted_chunk(self, obs: dict[str, np.ndarray], baseline: str) -> np.ndarray:
        """float32[A, 7], a scripted baseline's chunk: toward the named object ("scripted") or the mean of the
        objects in view ("prompt-blind": the mean of their hover points), from the gripper's pose, in the measured
        unit."""
        pos = self.objects.positions()
        eef = np.asarray(obs["robot0_eef_pos"])
        if baseline == "scripted":
            return approach_chunk(eef, pos[self.target], label=self.label, unit_m=ACTION_UNIT_M)
        view = np.flatnonzero(self.present)
        hover = np.mean([hover_point(pos[k], self.objects.labels[k]) for k in view], axis=0)
        return approach_chunk(eef, hover - [0.0, 0.0, HOVER_M], unit_m=ACTION_UNIT_M)

    def masks(self, obs: dict[str, np.ndarray]) -> tuple[Any, Any] | None:
        """(named object's CallMasks, the other objects' CallMasks) in the frames of `obs`, or None without a
        segmenter."""
        if self.segmenter is None:
            return None
        from pi0viz.analysis.masks import CallMasks

        full = self.segmenter.call_masks(obs)  # the task's objects; the instance maps are in obs
        cov = np.zeros((len(self.objects.names),) + full.coverage.shape[1:], np.float32)
        from pi0viz.analysis.masks import LIBERO_CAMERAS, LIBERO_SLOTS, patch_coverage

        for camera, slot in LIBERO_CAMERAS.items():
            seg = np.asarray(obs[camera + self.segmenter.SUFFIX])
            c = LIBERO_SLOTS.index(slot)
            for k, inst in enumerate(self.objects.instance):
                cov[k, c] = patch_coverage(seg == inst, grid=cov.shape[2:])
        others = [k for k in np.flatnonzero(self.present) if k != self.target]
        named = CallMasks(list(full.camera_names), [self.objects.names[self.target]], cov[[self.target]],
                          full.has_mask.copy())
        if not others:
            return named, None
        rest = CallMasks(list(full.camera_names), [self.objects.names[k] for k in others], cov[others],
                         full.has_mask.copy())  # the metrics take their union
        return named, rest

    def outcome(self) -> dict[str, Any]:
        """The reach's own figures for the episode record."""
        moved = np.linalg.norm(self.objects.positions()[self.target, :2] - self.start[self.target, :2])
        hits = [t for t, d in enumerate(self.distances) if d <= SUCCESS_RADIUS_M]
        return {"object": self.label, "objects_in_view": int(self.present.sum()),
                "reached_at_step": hits[0] + 1 if hits else None,  # control steps after the settle steps
                "min_distance_cm": round(100 * min(self.distances), 2) if self.distances else None,
                "final_distance_cm": round(100 * self.distances[-1], 2) if self.distances else None,
                "near_at_end": bool(self.distances and self.distances[-1] <= SUCCESS_RADIUS_M),
                "target_moved_cm": round(100 * float(moved), 2)}
