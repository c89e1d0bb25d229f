"""Speed and memory of pi0viz.model.sample_actions with and without attention capture.

    python benchmarks/model_bench.py            # tiny openpi reference configs, pi0 and pi0.5 (float32), ~1 min
    python benchmarks/model_bench.py --tiny-model pi05     # only the tiny pi0.5
    python benchmarks/model_bench.py --full     # also a full-size pi0 (random bfloat16 weights: 6 GiB, ~12 GB
                                                # peak RSS, 2-3 min init, 40-50 s per call on a shared 2-core CPU)
    python benchmarks/model_bench.py --full --full-model pi05    # full-size pi0.5 (pi05_libero: horizon 10)

Prints compile time, per-call wall time (min and median of alternating runs, so machine load hits every
variant alike) and CPU time, the capture/no-capture ratios (target <= 1.2x), the captured bytes, whether the
actions are bitwise equal with and without capture, and the process peak RSS after each phase.
Timings on a shared machine are noisy: compare ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from pi0viz.model import CaptureOptions, Observation, Pi0Config, init_params, load_params, sample_actions

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # model -> (openpi tiny checkpoint, config)
    "pi0": (ROOT / "tests" / "data" / "openpi_pi0_tiny" / "params", Pi0Config.tiny()),
    "pi05": (ROOT / "tests" / "data" / "openpi_pi05_tiny" / "params",
             Pi0Config.tiny(pi05=True, action_horizon=10, max_token_len=200)),
}
FULL = {"pi0": Pi0Config.pi0(), "pi05": Pi0Config.pi0(pi05=True, action_horizon=10)}  # pi0_libero, pi05_libero


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fake_observation(config: Pi0Config, batch: int = 1) -> Observation:
    """LIBERO-like inputs: two cameras + an absent right wrist, a 20-token prompt."""
    rng = np.random.default_rng(0)
    images = {k: rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32) for k in config.image_keys}
    images["right_wrist_0_rgb"][:] = -1.0
    masks = {k: np.full(batch, k != "right_wrist_0_rgb") for k in config.image_keys}
    prompt = rng.integers(0, 5000, (batch, config.max_token_len)).astype(np.int32)
    prompt_mask = np.arange(config.max_token_len)[None].repeat(batch, 0) < 20
    state = rng.normal(size=(batch, config.action_dim)).astype(np.float32)
    return Observation(images, masks, state, prompt, prompt_mask)


def run(params, config, obs, noise, capture):
    out = sample_actions(params, config, jax.random.key(0), obs, noise=noise, capture=capture)
    jax.block_until_ready((out.actions, out.attention))
    return out


def nbytes(out) -> int:
    arrays = (out.attention, out.attention_logits, out.prefix_attention)
    return sum(a.size * a.dtype.itemsize for a in arrays if a is not None)


def bench(name: str, params, config: Pi0Config, repeats: int, variants: dict[str, CaptureOptions | None]) -> None:
    obs = fake_observation(config)
    noise = np.asarray(jax.random.normal(jax.random.key(1), (1, config.action_horizon, config.action_dim)))
    print(f"\n== {name}: {config.paligemma_variant} + {config.action_expert_variant} + SigLIP {config.siglip_variant}, "
          f"{config.dtype}, batch 1, peak RSS before compile {peak_rss_gb():.2f} GB")
    outs = {}
    for label, capture in variants.items():
        t0 = time.perf_counter()
        outs[label] = run(params, config, obs, noise, capture)
        first = time.perf_counter() - t0
        print(f"  first call (compile + run) {label:>14}: {first:7.2f} s   peak RSS {peak_rss_gb():.2f} GB")
    base = np.asarray(outs["none"].actions)
    for label, out in outs.items():
        same = np.array_equal(np.asarray(out.actions), base)
        print(f"  {label:>14}: captured {nbytes(out) / 2**20:9.1f} MiB, actions bitwise equal to no capture: {same}")

    wall: dict[str, list[float]] = {label: [] for label in variants}
    cpu: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(repeats):  # alternate so load spikes hit every variant
        for label, capture in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run(params, config, obs, noise, capture)
            wall[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
    # On a shared machine the minimum wall time and the CPU time (all threads of this process) are the
    # least load-sensitive; the median wall time is shown too.
    ref_min, ref_med, ref_cpu = min(wall["none"]), statistics.median(wall["none"]), statistics.median(cpu["none"])
    for label in variants:
        mn, med, c = min(wall[label]), statistics.median(wall[label]), statistics.median(cpu[label])
        print(f"  steady call {label:>10}: wall min {mn * 1e3:8.1f} ms ({mn / ref_min:4.2f}x), "
              f"median {med * 1e3:8.1f} ms ({med / ref_med:4.2f}x); CPU time median {c * 1e3:8.1f} ms "
              f"({c / ref_cpu:4.2f}x)   [{repeats} runs]")
    print(f"  peak RSS after {name}: {peak_rss_gb():.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also run a full-size pi0 with random bfloat16 weights")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per variant on the tiny config")
    parser.add_argument("--full-repeats", type=int, default=1, help="timed calls per variant at full size")
    parser.add_argument("--tiny-model", choices=["pi0", "pi05", "both"], default="both", help="tiny configs to run")
    parser.add_argument("--full-model", choices=sorted(FULL), default="pi0", help="model of --full")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, python {sys.version.split()[0]}")

    variants = {
        "none": None,
        "full": CaptureOptions(),
        "reduced": CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16"),
    }
    for model in (["pi0", "pi05"] if args.tiny_model == "both" else [args.tiny_model]):
        path, config = TINY[model]
        t0 = time.perf_counter()
        tiny = load_params(path)
        print(f"\nload tiny openpi {model} checkpoint: {time.perf_counter() - t0:.2f} s")
        bench(f"tiny {model}", tiny, config, args.repeats, variants)

    if args.full:
        config = FULL[args.full_model]
        t0 = time.perf_counter()
        params = init_params(config, jax.random.key(0))
        jax.block_until_ready(params)
        n = sum(x.size for x in jax.tree.leaves(params))
        print(f"\ninit full {args.full_model}: {n / 1e9:.2f} B params, {n * 2 / 2**30:.2f} GiB bfloat16, "
              f"{time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_gb():.2f} GB")
        bench(f"full {args.full_model}", params, config, args.full_repeats, {"none": None, "full": CaptureOptions()})


if __name__ == "__main__":
    main()
