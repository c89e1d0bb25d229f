"""What a sweep runs: its settings, and one key per episode.

An episode is identified by (suite, task, trial, seed): trial k of task t uses LIBERO init state k (mod the
suite's 50), the env is seeded with `seed`, and the policy's noise for call n is drawn from (seed, task, trial, n),
so the same key gives the same episode on any worker, in any order, in any run.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from pi0viz.errors import ConfigError
from pi0viz.policy.spec import PolicySpec, parse_policy_spec, require_kinds

RECORD_FORMAT = "pi0viz.sweep-episode/1"


@dataclasses.dataclass(frozen=True, order=True)
class EpisodeKey:
    """One episode of the evaluation."""

    suite: str
    task: int
    trial: int
    seed: int

    @property
    def name(self) -> str:
        """File-name stem, e.g. "libero_spatial_t03_e012_s7"."""
        return f"{self.suite}_t{self.task:02d}_e{self.trial:03d}_s{self.seed}"

    def noise_seed(self, call: int) -> list[int]:
        """numpy SeedSequence entropy of the policy noise of call `call` of this episode."""
        return [self.seed, self.task, self.trial, call]


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Everything that determines an episode's content (stored in run.json; a resumed run must match).

    Attributes:
        suite: LIBERO suite name. policy: a policy spec, "tiny", "reach-tiny", "checkpoint:DIR" or "ws://HOST:PORT".
        tokenizer: PaliGemma tokenizer path for checkpoint policies.
        max_steps: env steps after the wait steps (default: the suite's limit, as openpi).
        max_calls: end an episode after this many inference calls (None: only max_steps / success end it).
        num_steps_wait, replan_steps, resize_size: openpi's LIBERO loop (10, 5, 224).
        env_resolution: LIBERO camera size in pixels (openpi: 256; the model sees 224 either way).
        all_heads: ship every head's attention from the policy (exact per-head region masses, 8x more data);
            default: heads max-fused on the device (the same fused maps).
        steps, layers: which denoising steps / layers to keep in the record (None = all), e.g. "9" or "12-17"
            (pi0viz.core.selection's grammar: a range keeps the stored values inside it).
        grounding: segment the task's objects in every call's frames and store the call's grounding metrics
            (pi0viz.sweep.metrics_hook) in the record.
        reach_baseline: the reach suite only: run a baseline instead of the policy's answers ("untrained",
            "prompt-blind", "scripted"; pi0viz.sweep.reach).
    """

    suite: str = "libero_spatial"
    policy: str = "tiny"
    tokenizer: str | None = None
    max_steps: int | None = None
    max_calls: int | None = None
    num_steps_wait: int = 10
    replan_steps: int = 5
    resize_size: int = 224
    env_resolution: int = 256
    all_heads: bool = False
    steps: str | None = None
    layers: str | None = None
    grounding: bool = True
    reach_baseline: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["reach_baseline"] is None:  # run.json of a sweep from before the reach suite reads the same
            del out["reach_baseline"]
        return out


# The reach suite (pi0viz.sweep.reach): reach-tiny's task in closed loop on libero_object's scenes.
REACH_SUITE = "reach"
REACH_MAX_STEPS = 80  # control steps after the settle steps
REACH_BASELINES = ("untrained", "prompt-blind", "scripted")


def max_steps_of(suite: str) -> int:
    """The default episode length of a suite (openpi's LIBERO limits; the reach suite's REACH_MAX_STEPS)."""
    from pi0viz.policy import libero_env

    return REACH_MAX_STEPS if suite == REACH_SUITE else libero_env.MAX_STEPS[suite]


# A sweep draws every call's noise itself (EpisodeKey.noise_seed), which pi0viz's JAX policies and servers take;
# a LeRobot policy samples its own noise, so it runs under `pi0viz serve --lerobot` and the sweep uses ws://.
SWEEP_KINDS = ("tiny", "reach-tiny", "checkpoint", "server")


def sweep_policy(text: str) -> PolicySpec:
    """The sweep's --policy as a spec (pi0viz.policy.spec, the parser of every command): tiny, reach-tiny,
    checkpoint:DIR or ws://HOST:PORT. Raises PolicySpecError (one line) for anything else."""
    return require_kinds(parse_policy_spec(text), SWEEP_KINDS, "pi0viz sweep")


# openpi's whole LIBERO evaluation is 2,000 episodes (libero_90 alone: 4,500); a plan is a list of keys, so its
# size is bounded before it is built: 10^11 episodes are refused at once instead of filling the memory.
MAX_EPISODES = 100_000
SEED_MAX = 2**32 - 1  # LIBERO seeds numpy's global RNG (np.random.seed): 0..2^32-1
MAX_ACTORS = 1024  # env workers / policy replicas: far beyond what 2,000 episodes can use; bounds a typo's actors
ENV_RESOLUTION = (32, 1024)  # camera pixels: the model sees 224 either way (openpi renders 256)

# Every count or size a sweep takes, as (lowest, highest or None): checked before anything starts, so a negative
# or zero value is one line instead of an empty results table (pi0viz.sweep.engine.check_arguments; the
# command's click ranges say the same, docs/cli.md lists them).
LIMITS: dict[str, tuple[float, float | None]] = {
    "--episodes-per-task": (1, MAX_EPISODES),
    "--env-workers": (1, MAX_ACTORS),
    "--policy-actors": (1, MAX_ACTORS),
    "--num-cpus": (1, None),
    "--policy-gpus": (0, 1),  # a policy runs on one device: a share of one GPU, or all of it
    "--max-steps": (1, None),
    "--max-calls": (1, None),
    "--max-in-flight": (1, None),
    "--env-resolution": ENV_RESOLUTION,
    "--seed": (0, SEED_MAX),
}
FLOAT_FLAGS = ("--policy-gpus",)


def plan_episodes(suite: str, task_ids: list[int], episodes_per_task: int, seed: int) -> list[EpisodeKey]:
    """Every episode of the sweep, task-major (trial k uses init state k, as openpi's loop).

    Expected: 1 <= episodes_per_task, len(task_ids) x episodes_per_task <= MAX_EPISODES (checked before any
    key is made), a seed in 0..SEED_MAX. Raises ConfigError (one line) otherwise.
    """
    if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, numbers.Integral) \
            or episodes_per_task < 1:
        raise ConfigError(f"--episodes-per-task must be an integer >= 1, got {episodes_per_task!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be an integer in 0..{SEED_MAX} (LIBERO seeds numpy with it), got {seed!r}")
    episodes_per_task, seed = int(episodes_per_task), int(seed)
    total = len(task_ids) * episodes_per_task
    if total > MAX_EPISODES:
        raise ConfigError(f"--episodes-per-task {episodes_per_task} x {len(task_ids)} tasks is {total} episodes; a "
                          f"sweep plans at most {MAX_EPISODES} (openpi's whole LIBERO evaluation is 2,000)")
    return [EpisodeKey(suite, t, k, seed) for t in task_ids for k in range(episodes_per_task)]
