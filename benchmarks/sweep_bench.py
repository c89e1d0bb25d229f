"""Throughput of `pi0viz sweep` on this machine: episodes per hour with 1 and 2 LIBERO env workers (tiny pi0,
local Ray, the real simulator), the share of episode time the simulator waits on attention work (target < 10 %),
and the per-call costs that docs/scaling.md extrapolates from.

    python benchmarks/sweep_bench.py                    # 2 tasks x 2 episodes x 4 calls per worker count
    python benchmarks/sweep_bench.py --calls 8 --render # also render every call's JPEG tree in the attention tasks

Each worker count runs the same episodes in a fresh run folder, so the 2-worker figure is a ratio against the
1-worker baseline of the same run. Ray start-up and env creation are reported apart from the episodes. Needs the
LIBERO extra and Ray (scripts/install.sh libero sweep).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def per_call_costs(repeats: int = 3) -> dict[str, float]:
    """Seconds of the attention task (fusion + float16 record part) and of writing the record, per call, for a
    tiny and a full-size pi0 call (synthetic probabilities: real attention is peakier and compresses better)."""
    from pi0viz.core.synthetic import synthetic_bundle
    from pi0viz.sweep.attention import summarize_call
    from pi0viz.sweep.finish import assemble_record
    from pi0viz.sweep.plan import EpisodeKey, SweepSettings
    from pi0viz.sweep.store import RunStore

    out = {}
    for name, layers in (("tiny", 4), ("full", 18)):
        bundle = synthetic_bundle(num_layers=layers, num_heads=1, dtype=np.float16,
                                  image_masks=(True, True, False))
        bundle.attention_heads = "max"  # as the sweep captures it: heads max-fused on the device, float16
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            summarize_call(bundle)
            times.append(time.perf_counter() - start)
        out[f"attention_task_{name}_s"] = min(times)
        # the finish task's share per call: compress + write the record (np.savez_compressed, fsync)
        part = summarize_call(bundle)
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore(tmp).open(SweepSettings())
            key = EpisodeKey("libero_spatial", 0, 0, 7)
            outcome = {"key": {"suite": key.suite, "task": 0, "trial": 0, "seed": 7}, "prompt": "", "success": False,
                       "steps": 0, "calls": 4, "error": None}
            start = time.perf_counter()
            path = store.write_record(key, assemble_record(outcome, {}, [part] * 4, None))
            out[f"record_write_{name}_s_per_call"] = (time.perf_counter() - start) / 4
            out[f"record_{name}_mib_per_call"] = path.stat().st_size / 4 / 2**20
    return out


def run(workers: int, args: argparse.Namespace, root: Path) -> dict:
    from pi0viz.sweep.engine import RunOptions, run_sweep
    from pi0viz.sweep.plan import SweepSettings
    from pi0viz.sweep.rollout import WorkerOptions

    settings = SweepSettings(policy="tiny", max_calls=args.calls)
    lines: list[str] = []
    options = RunOptions(out=str(root / f"w{workers}"), episodes_per_task=args.episodes, task_ids=args.tasks,
                         env_workers=workers, worker=WorkerOptions(render=args.render, video=True),
                         echo=lines.append)
    start = time.monotonic()
    summary = run_sweep(settings, options)
    wall = time.monotonic() - start
    t = summary["timing"]
    episodes = summary["total"]["episodes"]
    return {"workers": workers, "episodes": episodes, "wall_s": wall, "episodes_per_hour": episodes * 3600 / wall,
            "episode_s": t["wall_s"] / episodes, "setup_s": t["setup_s"], "sim_s": t["sim_s"],
            "policy_s": t["policy_s"], "attention_wait_s": t["attention_wait_s"],
            "attention_wait_share": t["attention_wait_share"], "calls": episodes * args.calls,
            "steps": episodes * (10 + 5 * args.calls)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=2, help="episodes per task")
    p.add_argument("--tasks", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--calls", type=int, default=4, help="inference calls per episode")
    p.add_argument("--render", action="store_true", help="render every call's JPEG tree too")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                   help="env worker counts to run, e.g. '1' (default '1,2')")
    args = p.parse_args()

    print("per call:", ", ".join(f"{k} {v:.3f}" for k, v in per_call_costs().items()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as tmp:
        for workers in args.workers:
            rows.append(run(workers, args, Path(tmp)))
            r = rows[-1]
            print(f"{workers} env worker(s): {r['episodes']} episodes in {r['wall_s']:.0f} s -> "
                  f"{r['episodes_per_hour']:.0f} episodes/h; per episode {r['episode_s']:.1f} s "
                  f"(simulator {r['sim_s'] / r['episodes']:.1f} s = {r['sim_s'] / r['steps']:.2f} s/step, policy "
                  f"{r['policy_s'] / r['episodes']:.1f} s = {r['policy_s'] / r['calls']:.2f} s/call, waiting on "
                  f"attention {r['attention_wait_s'] / r['episodes']:.2f} s = "
                  f"{100 * r['attention_wait_share']:.1f} % of episode time); env creation {r['setup_s']:.0f} s")
    if len(rows) > 1:
        print(f"{rows[1]['workers']} vs {rows[0]['workers']} env workers: "
              f"{rows[1]['episodes_per_hour'] / rows[0]['episodes_per_hour']:.2f}x episodes/h")
    print(f"attention wait share at most {100 * max(r['attention_wait_share'] for r in rows):.1f} % (target < 10 %)")


if __name__ == "__main__":
    main()
