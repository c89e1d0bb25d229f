"""The LIBERO env worker, held by a Ray actor: openpi's episode loop, with every call's attention handed to a
separate Ray task so the simulator never waits on fusion, bundle writing or JPEG encoding, only (when more
than `max_in_flight` of its calls are still being processed) on backpressure, which is timed.

Episode loop (openpi examples/libero/main.py): reset, set the task's init state for this trial, 10 "wait" steps
with the dummy action, then every `replan_steps` steps ask the policy for a chunk and execute its first
`replan_steps` actions, until success, the step limit, or (optional) `max_calls` inference calls.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
import traceback
from typing import Any

import numpy as np

from pi0viz.policy import libero_env
from pi0viz.sweep.attention import summarize_call
from pi0viz.sweep.finish import finish_episode
from pi0viz.sweep.plan import EpisodeKey, SweepSettings, max_steps_of
from pi0viz.sweep.reach import BASE_SUITE, OTHERS_PREFIX, REACH_SUITE, SCRIPTED, ReachEpisode
from pi0viz.sweep.store import RunStore


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How an env worker hands off its attention work (none of this changes an episode's content).

    Attributes:
        max_in_flight: attention tasks of this worker that may be pending before the simulator waits.
        attention_cpus: logical CPUs one attention task asks Ray for.
        video: write the rollout video (model-input agentview frames, 10 fps).
        render: render each call's attention_viz JPEG tree under RUN_DIR/render/<episode>/.
        save_bundles: save each call's capture bundle under RUN_DIR/bundles/<episode>/.
    """

    max_in_flight: int = 2
    attention_cpus: float = 1.0
    video: bool = True
    render: bool = False
    save_bundles: bool = False


class EnvWorker:
    """Runs episodes one at a time in a LIBERO env that is kept while consecutive episodes share a task."""

    def __init__(self, name: str, run_dir: str, settings: SweepSettings, options: WorkerOptions) -> None:
        import ray

        self.name = name
        self.run_dir = run_dir
        self.settings = settings
        self.options = options
        self.store = RunStore(run_dir)
        self.reach = settings.suite == REACH_SUITE  # reach-tiny's task in closed loop (pi0viz.sweep.reach)
        self.suite = libero_env.task_suite(BASE_SUITE if self.reach else settings.suite)
        self.max_steps = settings.max_steps or max_steps_of(settings.suite)
        self.env: Any = None
        self.env_key: tuple[int, int] | None = None
        self.prompt = ""
        self._attention = ray.remote(num_cpus=options.attention_cpus, max_retries=2)(summarize_call)
        self._finish = ray.remote(num_cpus=options.attention_cpus, max_retries=2)(finish_episode)

    def pid(self) -> int:
        return os.getpid()

    def _env_for(self, key: EpisodeKey) -> float:
        """Create (or reuse) the env of the key's task. Returns the seconds spent creating it."""
        if self.env_key == (key.task, key.seed):
            return 0.0
        start = time.monotonic()
        if self.env is not None:
            self.env.close()
        self.env, self.prompt = libero_env.make_env(self.suite, key.task, resolution=self.settings.env_resolution,
                                                    seed=key.seed)
        self.env_key = (key.task, key.seed)
        return time.monotonic() - start

    def run(self, key: EpisodeKey, policy: Any) -> dict[str, Any]:
        """One episode. Returns {"outcome": {...}, "timing": {...}, "finish": ObjectRef of the record write}."""
        import ray

        self.store.mark_started(key, self.name)
        setup_s = self._env_for(key)
        s = self.settings
        init_states = self.suite.get_task_init_states(key.task)
        wall0 = time.monotonic()
        sim_s = policy_s = wait_s = 0.0
        pending: list[Any] = []  # attention tasks not known to be finished
        calls: list[Any] = []
        frames: list[np.ndarray] = []
        plan: collections.deque = collections.deque()
        t, n_calls, success, error = 0, 0, False, None
        reach: ReachEpisode | None = None
        prompt = self.prompt
        scripted = self.reach and s.reach_baseline in SCRIPTED
        # Without a video only the calls' frames are seen: the other control steps skip rendering (physics only,
        # ~25 ms instead of ~0.3 s a step). The episode is the same: rendering does not touch the physics, and
        # robosuite samples a camera at the first substep of a control step once its sampling period restarted,
        # which a camera switched on two steps before the call's step has done (one step may not be enough).
        lean = not self.options.video
        cameras = libero_env.CameraSwitch(self.env, on=True)  # on: as the last episode (or the env's start) left them
        n_scripted = 0  # chunks of a scripted baseline
        try:
            t0 = time.monotonic()
            # Reseed first: reset() rebuilds the scene and places the fixtures from the env's RNG, which
            # set_init_state does not override; without it an episode's pixels depend on the worker's history.
            self.env.seed(key.seed)
            self.env.reset()
            segmenter = self._segmenter()  # after the reset: a hard reset rebuilds the model's observables
            if self.reach:  # a random layout from the key, settled; the prompt names an object in view
                reach = ReachEpisode(self.env, init_states, key, settle=s.num_steps_wait, segmenter=segmenter)
                obs, prompt, t = reach.obs, reach.prompt, s.num_steps_wait  # the settle steps were the wait
            else:
                obs = self.env.set_init_state(init_states[key.trial % len(init_states)])
            sim_s += time.monotonic() - t0
            while t < self.max_steps + s.num_steps_wait:
                t0 = time.monotonic()
                if t < s.num_steps_wait:  # objects are dropped into the scene: let them settle
                    if lean:  # the last two wait steps render: the first call reads the last one's frames
                        cameras.switch(t >= s.num_steps_wait - 2)
                    obs, _, _, _ = self.env.step(list(libero_env.DUMMY_ACTION))
                    t += 1
                    sim_s += time.monotonic() - t0
                    continue
                if not plan and s.max_calls is not None and n_calls >= s.max_calls:
                    break
                if not (lean and plan):  # lean: only a call's step has rendered frames
                    request = libero_env.policy_observation(obs, prompt, size=s.resize_size)
                    frames.append(request["observation/image"])
                sim_s += time.monotonic() - t0
                if not plan and scripted:  # a scripted baseline: no policy call, no attention (calls stays 0)
                    plan.extend(reach.scripted_chunk(obs, s.reach_baseline)[: s.replan_steps])
                    n_scripted += 1
                if not plan:
                    t0 = time.monotonic()
                    others = None
                    if reach is not None:  # the named object, and the other objects in view
                        masks, others = reach.masks(obs) or (None, None)
                    else:
                        masks = segmenter.call_masks(obs) if segmenter is not None else None  # `request`'s frames
                    actions_ref, bundle_ref = policy.infer.options(num_returns=2).remote(
                        request, n_calls, key.noise_seed(n_calls))
                    chunk = ray.get(actions_ref)
                    policy_s += time.monotonic() - t0
                    if len(chunk) < s.replan_steps:
                        raise ValueError(f"replanning every {s.replan_steps} steps needs chunks that long; "
                                         f"the policy returned {len(chunk)} actions")
                    plan.extend(chunk[: s.replan_steps])
                    wait_s += self._backpressure(pending)
                    ref = self._attention.remote(bundle_ref, steps=s.steps, layers=s.layers, masks=masks,
                                                 other_masks=others, other_prefix=OTHERS_PREFIX,
                                                 **self._call_files(key, n_calls))
                    pending.append(ref)
                    calls.append(ref)
                    n_calls += 1
                t0 = time.monotonic()
                action = plan.popleft()
                if lean:  # the last two steps before a call render: the call reads the last one's frames
                    cameras.switch(len(plan) <= 1)
                obs, _, done, _ = self.env.step(action.tolist())
                sim_s += time.monotonic() - t0
                if reach is not None:  # success by distance, once reached (as LIBERO counts it); the episode
                    success = reach.step_done(obs) or success  # runs on: does the arm stay, or push the target?
                    done = False
                if done:
                    success = True
                    break
                t += 1
        except ray.exceptions.RayError:
            raise  # a dead policy or lost object is the run's fault, not the episode's: the driver redoes it
        except Exception:  # as openpi: an episode that fails in the simulator counts as a failure
            error = traceback.format_exc(limit=3)
        finally:
            if lean:  # the env is reused for the next episode
                cameras.switch(True)
        outcome = {"key": dataclasses.asdict(key), "prompt": prompt, "success": success, "steps": t,
                   "calls": n_calls, "error": error}
        if reach is not None:
            outcome.update(reach.outcome(), scripted_chunks=n_scripted)
        timing = {"worker": self.name, "wall_s": time.monotonic() - wall0, "setup_s": setup_s, "sim_s": sim_s,
                  "policy_s": policy_s, "attention_wait_s": wait_s}
        video = np.stack(frames) if (frames and self.options.video) else None
        finish = self._finish.remote(self.run_dir, outcome, timing, video, *calls)
        return {"outcome": outcome, "timing": timing, "finish": finish}  # a nested ref: the driver waits on it

    def _segmenter(self) -> Any:
        """Object masks for the frames of the env's observations from now on (None without grounding)."""
        if not self.settings.grounding:
            return None
        from pi0viz.analysis.masks import LiberoSegmenter

        return LiberoSegmenter(self.env, resolution=self.settings.env_resolution)

    def _backpressure(self, pending: list[Any]) -> float:
        """Wait until fewer than max_in_flight attention tasks are pending; returns the seconds waited."""
        import ray

        if pending:
            _, still = ray.wait(pending, num_returns=len(pending), timeout=0)
            pending[:] = still
        if len(pending) < self.options.max_in_flight:
            return 0.0
        start = time.monotonic()
        _, still = ray.wait(pending, num_returns=len(pending) - self.options.max_in_flight + 1)
        pending[:] = still
        return time.monotonic() - start

    def _call_files(self, key: EpisodeKey, call: int) -> dict[str, str | None]:
        o = self.options
        return {
            "bundle_path": (os.path.join(self.run_dir, "bundles", key.name, f"inference_{call:03d}.npz")
                            if o.save_bundles else None),
            "render_dir": os.path.join(self.run_dir, "render", key.name) if o.render else None,
        }

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
