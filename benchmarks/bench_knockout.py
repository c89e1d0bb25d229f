"""Knockout throughput: conditions per second batched over conditions (one sampler call with B rows, each its own
key set) against one condition per call, in the same run (pi0viz.causal.knockout.sample_knockouts).

    python benchmarks/bench_knockout.py                    # reach-tiny and the tiny pi0 (random weights), B = 32
    python benchmarks/bench_knockout.py --model reach-tiny --conditions 64 --repeats 3

Compiles first (not timed), then alternates the two ways `--repeats` times (machine load hits both alike) and prints
the median wall time of each, conditions per second, and the ratio. Every condition removes 11 random patches of
the first camera from every query (route "all"); the rows' actions are checked equal between the two ways.
Timings on a shared machine are noisy: compare the ratio within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from pi0viz.causal.knockout import Knockout, random_keys, sample_knockouts, take_observation
from pi0viz.model import Observation, Pi0Config, init_params


def tiny_pi0() -> tuple[object, Pi0Config, Observation]:
    """The tiny pi0 (SigLIP mu/14 + dummy Gemma experts, random weights), LIBERO-like inputs, batch 1."""
    config = Pi0Config.tiny()
    params = init_params(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    obs = Observation(images={k: rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32) for k in config.image_keys},
                      image_masks={k: np.array([k != "right_wrist_0_rgb"]) for k in config.image_keys},
                      state=rng.normal(size=(1, config.action_dim)).astype(np.float32),
                      tokenized_prompt=rng.integers(0, 250, (1, config.max_token_len)).astype(np.int32),
                      tokenized_prompt_mask=np.arange(config.max_token_len)[None] < 12)
    return params, config, obs


def reach_tiny() -> tuple[object, Pi0Config, Observation]:
    from pi0viz.policy.reach_model import heldout_scenes, load_reach_policy
    from pi0viz.training.reach_eval import batch_observation

    policy, scenes = load_reach_policy(), heldout_scenes()
    return policy.params, policy.config, batch_observation(policy, scenes, scenes.examples[:1])


def measure(name: str, params, config, obs, conditions: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    conds = [Knockout(f"random {i}", random_keys(config, config.image_keys[0], 11, rng)) for i in range(conditions)]
    noise = np.random.default_rng(2).standard_normal((conditions, config.action_horizon, config.action_dim))
    noise = noise.astype(np.float32)
    rows = take_observation(obs, np.zeros(conditions, int))

    def batched() -> np.ndarray:
        return sample_knockouts(params, config, rows, conds, noise, batch=conditions)[0]

    def one_by_one() -> np.ndarray:
        return np.concatenate([sample_knockouts(params, config, take_observation(obs, np.zeros(1, int)), [c],
                                                noise[i:i + 1], batch=1)[0] for i, c in enumerate(conds)])

    t0 = time.perf_counter()
    a, b = batched(), one_by_one()  # compiles both shapes
    compile_s = time.perf_counter() - t0
    np.testing.assert_allclose(a, b, atol=1e-4)  # the same conditions either way (batching may reorder sums)
    times: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    for _ in range(repeats):
        for way, fn in (("batched", batched), ("one_by_one", one_by_one)):
            t = time.perf_counter()
            fn()
            times[way].append(time.perf_counter() - t)
    med = {way: statistics.median(v) for way, v in times.items()}
    out = {"conditions": conditions, "compile_s": compile_s, "batched_s": med["batched"],
           "one_by_one_s": med["one_by_one"], "batched_per_s": conditions / med["batched"],
           "one_by_one_per_s": conditions / med["one_by_one"], "speedup": med["one_by_one"] / med["batched"],
           "one_call_s": med["one_by_one"] / conditions}
    print(f"{name}: {conditions} conditions; batched {med['batched']:.2f} s ({out['batched_per_s']:.1f}/s), one by "
          f"one {med['one_by_one']:.2f} s ({out['one_by_one_per_s']:.1f}/s, {out['one_call_s'] * 1000:.0f} ms a "
          f"call); batched is {out['speedup']:.1f}x faster (compile {compile_s:.0f} s, median of {repeats})",
          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["reach-tiny", "tiny", "both"], default="both")
    parser.add_argument("--conditions", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
    if args.model in ("reach-tiny", "both"):
        measure("reach-tiny (1 camera, 4 layers)", *reach_tiny(), args.conditions, args.repeats)
    if args.model in ("tiny", "both"):
        measure("tiny pi0 (3 cameras, dummy Gemma)", *tiny_pi0(), args.conditions, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
