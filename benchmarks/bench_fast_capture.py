"""Cost of the decoding capture of pi0viz's JAX pi0-FAST (tiny size): the greedy decode loop with capture off and on.

    python benchmarks/bench_fast_capture.py               # 7 rounds, ~1 min on a shared CPU
    python benchmarks/bench_fast_capture.py --rounds 15

The untrained tiny pi0-FAST (`Pi0FastConfig.tiny()`: dummy Gemma, SigLIP mu/14, float32, 832 prefix slots, random
weights from seed 0, which never emit EOS, so every call runs all 24 decode steps) on a shipped LIBERO frame. Each
variant is compiled once before timing; the variants alternate in rounds so machine load hits them alike. Printed:
the ratio to no capture of the minimum wall time and of the median process CPU time (target <= 1.2x), whether the
generated tokens are identical (capture must not change the computation), and the bytes one call's decode attention
takes at full size (pi0_fast_libero), from the shapes:

    bytes = J decode steps x L layers x K' x G' heads x 1 query x S' keys x itemsize
    L = 18 (gemma_2b), 8 query heads (K = 1 kv head x G = 8; "heads max": K' = G' = 1),
    P = 3 cameras x 256 patches + 180 prompt slots = 948, S' = P + J (all keys) or P (prefix keys only),
    J <= 256 (openpi's max_decoding_steps; the device buffer holds all 256, a bundle keeps the steps run).
Timings on a shared machine are noisy: compare ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import numpy as np

from pi0viz.core.capture_options import CaptureOptions
from pi0viz.model.config import Pi0FastConfig
from pi0viz.model.pi0_fast import FastObservation, init_fast_params, sample_tokens
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.policy.tokenizer import PromptTokenizer

VARIANTS: dict[str, CaptureOptions | None] = {
    "off": None,
    "full float32": CaptureOptions(),
    "heads max, float16": CaptureOptions(fuse_heads=True, dtype="float16"),
    "heads max, prefix keys, float16": CaptureOptions(fuse_heads=True, prefix_keys_only=True, dtype="float16"),
}


def observation(config: Pi0FastConfig) -> FastObservation:
    """A LIBERO frame as pi0-FAST input: agentview, wrist, a black right wrist (unmasked), "Task: ..., State: ...;"."""
    frame = load_libero_frames()[0]
    tokenizer = PromptTokenizer.bundled()
    state = np.clip(np.asarray(frame.state, np.float64), -1, 1)
    ids = tokenizer.encode_prompt_with_state(frame.prompt, state)[: config.max_token_len]
    t = config.max_token_len
    token_ids = np.zeros((1, t), np.int32)
    token_ids[0, : len(ids)] = ids
    images = [frame.image, frame.wrist_image, np.zeros_like(frame.image)]
    return FastObservation(
        images={k: img[None].astype(np.float32) / 127.5 - 1.0 for k, img in zip(config.image_keys, images)},
        image_masks={k: np.ones((1,), bool) for k in config.image_keys},
        tokenized_prompt=token_ids, tokenized_prompt_mask=np.arange(t)[None] < len(ids),
        token_ar_mask=np.zeros((1, t), np.int32))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def full_size_bytes(steps: int = 256) -> dict[str, int]:
    """Bytes of one call's decode attention at pi0_fast_libero's shape, per reduction (formula in the docstring)."""
    config = Pi0FastConfig.pi0_fast_libero()
    layers, heads, prefix = config.llm.depth, config.llm.num_heads, config.prefix_len
    return {
        "full float32": steps * layers * heads * (prefix + steps) * 4,
        "full float16": steps * layers * heads * (prefix + steps) * 2,
        "heads max, float16": steps * layers * (prefix + steps) * 2,
        "heads max, prefix keys, float16": steps * layers * prefix * 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    config = Pi0FastConfig.tiny()
    params = init_fast_params(config, jax.random.key(0))
    obs = observation(config)

    def run(capture: CaptureOptions | None):
        out = sample_tokens(params, config, obs, capture=capture)
        jax.block_until_ready((out.tokens, out.attention))
        return out

    tokens = {}
    for name, capture in VARIANTS.items():  # compile each variant once, outside the timing
        out = run(capture)
        tokens[name] = np.asarray(out.tokens)
        steps = int(out.num_steps)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, capture in VARIANTS.items():
            w0, c0 = time.perf_counter(), cpu_seconds()
            run(capture)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(cpu_seconds() - c0)
    base_wall, base_cpu = min(wall["off"]), statistics.median(cpu["off"])
    print(f"tiny pi0-FAST ({config.llm.depth} layers, {config.llm.num_heads} heads, {config.prefix_len} prefix slots), "
          f"{steps} decode steps per call, {args.rounds} rounds on {jax.devices()[0].platform}")
    print(f"{'variant':34s} {'min wall ms':>12s} {'ratio':>7s} {'median cpu ms':>14s} {'ratio':>7s}  tokens equal")
    for name in VARIANTS:
        w, c = min(wall[name]), statistics.median(cpu[name])
        same = np.array_equal(tokens[name], tokens["off"])
        print(f"{name:34s} {w * 1e3:12.1f} {w / base_wall:7.2f} {c * 1e3:14.1f} {c / base_cpu:7.2f}  {same}")
    print("\nfull size (pi0_fast_libero: 18 layers, 8 heads, P = 3 x 256 + 180 = 948 prefix keys), one call's decode "
          "attention = J x 18 x heads x (948 [+ J]) x itemsize:")
    for steps_full in (256, 64):
        sizes = ", ".join(f"{name} {b / 1e6:.1f} MB" for name, b in full_size_bytes(steps_full).items())
        print(f"  J = {steps_full}: {sizes}")


if __name__ == "__main__":
    main()
