"""Cost of capturing attention from this interpreter's PyTorch stack (tests/torch_stacks.py; tiny variant, openpi's
tiny reference weights): LeRobot's PI0Policy / PI05Policy (0.4.4 in .venv, 0.6.1 in .venv-lerobot06) or transformers'
own PI0ForConditionalGeneration (.venv-hf; pi0 only, its expert switched to eager attention by the capture).

    python benchmarks/torch_capture_bench.py              # the stack's kinds, 7 rounds each, ~1 min on a shared CPU
    python benchmarks/torch_capture_bench.py --rounds 15 --threads 2
    .venv-hf/bin/python benchmarks/torch_capture_bench.py  # transformers' native PI0

For each model: `sample_actions` on the reference case without capture, with the full capture and with each
reduction, alternating in rounds so that machine load hits every variant alike; prints the ratios to no capture
of the minimum wall time and of the median process CPU time (target <= 1.3x; on a loaded machine the wall
median mostly measures the neighbours), the bytes one call's attention takes for each reduction, and whether
the actions are bitwise equal with and without capture (hooks must not change the computation). On transformers'
native PI0 (SDPA by default) a row "no capture, eager expert" shows what the capture's eager switch costs alone,
and its actions differ from the uncaptured ones by float32 rounding (eager against SDPA).
Timings on a shared machine are noisy: compare ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny models live with the tests (torch_stacks.py, torch_support.py)

import torch_stacks as tst
import torch_support as ts

from pi0viz.torch_capture import CaptureOptions, capture_attention

VARIANTS = {
    "full float32": CaptureOptions(),
    "float16": CaptureOptions(dtype="float16"),
    "heads max": CaptureOptions(fuse_heads=True),
    "actions x prefix": CaptureOptions(action_rows_only=True, prefix_keys_only=True),
    "all reductions, float16": CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True,
                                              dtype="float16"),
}


def this_stack() -> tst.Stack:
    if tst.STACK not in tst.STACKS:
        sys.exit(f"no PyTorch pi0 stack in this interpreter ({tst.STACK}); see tests/torch_stacks.py")
    return tst.Stack(tst.STACK, ("pi0", "pi05") if tst.STACK in tst.LEROBOT_STACKS else ("pi0",))


EAGER = "no capture, eager expert"  # native PI0 only: what the eager switch alone costs (SDPA is its default)


def timed(policy, kind: str, case: dict, options: CaptureOptions | str | None
          ) -> tuple[float, float, np.ndarray, int]:
    """One call: wall and process-CPU seconds (including moving the capture to the host), actions, bytes."""
    stack = this_stack()
    wall, cpu = time.perf_counter(), time.process_time()
    if options == EAGER:
        before = policy.model.dit.config._attn_implementation
        policy.model.dit.set_attn_implementation("eager")
        try:
            actions = stack.sample(policy, kind, case)
        finally:
            policy.model.dit.set_attn_implementation(before)
        return time.perf_counter() - wall, time.process_time() - cpu, actions, 0
    if options is None:
        actions = stack.sample(policy, kind, case)
        return time.perf_counter() - wall, time.process_time() - cpu, actions, 0
    with capture_attention(policy, options) as cap:
        actions = stack.sample(policy, kind, case)
    attention = cap.attention()
    return time.perf_counter() - wall, time.process_time() - cpu, actions, attention.nbytes


def bench(kind: str, rounds: int) -> None:
    policy, case = this_stack().tiny(kind), ts.reference_case(kind)
    names = ["no capture", *([EAGER] if this_stack().name == tst.HF_NATIVE else []), *VARIANTS]
    times: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    nbytes: dict[str, int] = {}
    timed(policy, kind, case, None)  # warm-up: first-call allocations
    baseline = None
    equal, differ = True, 0.0
    for _ in range(rounds):
        for name in names:
            seconds, cpu, actions, size = timed(policy, kind, case, EAGER if name == EAGER else VARIANTS.get(name))
            times[name].append(seconds)
            cpus[name].append(cpu)
            nbytes[name] = size
            baseline = actions if baseline is None else baseline
            equal = equal and np.array_equal(actions, baseline)
            differ = max(differ, float(np.abs(actions - baseline).max()))
    base_wall, base_cpu = min(times["no capture"]), statistics.median(cpus["no capture"])
    print(f"\n{this_stack().name} {kind}: sample_actions, B = 1, 10 steps x 4 layers ({rounds} rounds, "
          f"{torch.get_num_threads()} threads)")
    print(f"  {'variant':26s} {'wall min s':>10s} {'ratio':>6s} {'wall med s':>10s} {'CPU med s':>9s} {'ratio':>6s}"
          f" {'bytes/call':>12s}")
    for name in names:
        wall, cpu = min(times[name]), statistics.median(cpus[name])
        print(f"  {name:26s} {wall:10.3f} {wall / base_wall:5.2f}x {statistics.median(times[name]):10.3f} "
              f"{cpu:9.3f} {cpu / base_cpu:5.2f}x {nbytes[name]:12,d}")
    why = "; SDPA without capture, eager with it" if this_stack().name == tst.HF_NATIVE else ""
    print(f"  actions bitwise equal with and without capture: {equal} (max difference {differ:.1e}{why})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise when shared)")
    parser.add_argument("--kinds", default=",".join(this_stack().kinds))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for kind in args.kinds.split(","):
        bench(kind, args.rounds)


if __name__ == "__main__":
    main()
