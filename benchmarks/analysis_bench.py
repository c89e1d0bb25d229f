"""Cost of the analysis of one full pi0 call against rendering that call's attention_viz tree.

In one run, on a pi0-shaped synthetic float32 call (10 steps x 18 layers x 50 action tokens = 9,000 cells, 8 heads,
867 keys, LIBERO camera masks: base + left wrist, right wrist padded) with object masks on both cameras:
  (a) metrics: action maps (head mean + max), sinks, grounding metrics of every cell and camera, the per-call
      summary; then also writing them (metrics JSON + the 9,000-row grounding CSV);
  (b) rendering the tree (27,000 JPEGs): by default a sample of denoising steps is rendered (--sample-steps,
      default 2 of 10) and the writing time is extrapolated to all steps; the preparation (fusion of the whole
      call, color levels) is paid once either way and is not extrapolated. --full-render renders every cell.
  (c) summary maps (mean over action tokens / + steps / + layers: 199 maps), reported apart.
Target: a / b < 10 %, in wall time and in CPU time (all processes; the machine's load hardly moves it).
(a) and (b) alternate for --rounds rounds; the minimum of each is compared (other jobs on
a shared machine only ever add time).

    python benchmarks/analysis_bench.py [--rounds 2] [--workers N] [--sample-steps 0,9] [--full-render]

Outputs go to benchmarks/out/analysis_<timestamp>/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load() -> str:
    return "load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def make_call():
    from pi0viz.core.synthetic import place_hot_key, synthetic_bundle

    b = synthetic_bundle(image_masks=(True, True, False))  # pi0 LIBERO: right wrist padded
    for d in range(10):  # a few hot spots so that top sets and argmaxes are not all ties
        place_hot_key(b, step=d, layer=5, action_token=3, head=2, key=4 * 16 + 11, mass=0.6)
    coverage = np.zeros((3, 16, 16), np.float32)
    coverage[0, 3:7, 9:13] = 1.0  # an object in the agent view
    coverage[0, 7, 9:13] = 0.5
    coverage[1, 8:14, 2:9] = 1.0  # and close up in the wrist camera
    return b, coverage, np.array([True, True, False])


def time_metrics(bundle, coverage, has, out: Path) -> dict[str, float]:
    from pi0viz.analysis import grounding as G
    from pi0viz.analysis.maps import action_maps
    from pi0viz.analysis.metrics import analyze_call, write_json
    from pi0viz.analysis.sinks import find_sinks

    t0 = time.perf_counter()
    maps = action_maps(bundle)
    t1 = time.perf_counter()
    find_sinks(maps)
    t2 = time.perf_counter()
    G.call_grounding(maps, coverage, has, bundle.image_masks[0])
    t3 = time.perf_counter()
    cpu = time.process_time()
    record, g = analyze_call(bundle, coverage=coverage, has_mask=has, objects=["object"])  # all of it, once more
    t4 = time.perf_counter()
    cpu = time.process_time() - cpu
    write_json(out / "call.metrics.json", record)
    G.to_csv(g, out / "call.grounding.csv", call=0)
    t5 = time.perf_counter()
    return {"maps_s": t1 - t0, "sinks_s": t2 - t1, "grounding_s": t3 - t2, "analyze_call_s": t4 - t3,
            "write_s": t5 - t4, "metrics_with_files_s": t5 - t3, "analyze_call_cpu_s": cpu}


def time_render(bundle, out: Path, workers: int | None, steps: str | None) -> dict[str, float]:
    from pi0viz.render.engine import RenderJob, RenderOptions, run_job

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, c0 = time.perf_counter(), time.process_time()
    job = RenderJob(bundle, str(out), 0, RenderOptions(workers=workers, steps=steps))
    t1, c1 = time.perf_counter(), time.process_time()
    summary = run_job(job)  # the worker processes are reaped here: their CPU time counts as children's
    t2, c2 = time.perf_counter(), time.process_time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
    sampled = len(job.step_pos)
    scale = bundle.attention.shape[0] / sampled
    return {"prepare_s": t1 - t0, "write_sample_s": t2 - t1, "files_sample": summary.files_written,
            "steps_rendered": sampled, "render_full_s": (t1 - t0) + (t2 - t1) * scale,
            "files_full": int(summary.files_written * scale), "workers": summary.workers,
            "render_full_cpu_s": (c1 - c0) + ((c2 - c1) + workers_cpu) * scale}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--sample-steps", default="0,9", help="denoising steps rendered when not --full-render")
    p.add_argument("--full-render", action="store_true", help="render all 9,000 cells (27,000 JPEGs)")
    args = p.parse_args()

    from pi0viz.analysis.summaries import write_call_summaries

    out = HERE / "out" / time.strftime("analysis_%Y%m%d_%H%M%S")
    out.mkdir(parents=True)
    bundle, coverage, has = make_call()
    print(f"call: attention {list(bundle.attention.shape)} {bundle.attention.dtype} "
          f"({bundle.attention.nbytes / 1e6:.0f} MB); {load()}")
    metrics, renders = [], []
    for r in range(args.rounds):
        m = time_metrics(bundle, coverage, has, out)
        metrics.append(m)
        print(f"round {r}: metrics {m['analyze_call_s']:.2f} s ({m['analyze_call_cpu_s']:.2f} s CPU), "
              f"+ files {m['metrics_with_files_s']:.2f} s (maps {m['maps_s']:.2f}, sinks {m['sinks_s']:.3f}, "
              f"grounding {m['grounding_s']:.2f}, write {m['write_s']:.2f}); {load()}")
        rd = time_render(bundle, out / f"tree_{r}", args.workers, None if args.full_render else args.sample_steps)
        renders.append(rd)
        print(f"round {r}: render {rd['files_sample']} files in {rd['prepare_s']:.2f} s prepare + "
              f"{rd['write_sample_s']:.2f} s write -> full tree {rd['render_full_s']:.1f} s "
              f"({rd['files_full']} files, {rd['workers']} workers{'' if args.full_render else ', extrapolated'}); "
              f"{load()}")
    t = time.perf_counter()
    write_call_summaries(bundle, out / "summaries")
    summaries_s = time.perf_counter() - t
    best_m = min(m["analyze_call_s"] for m in metrics)
    best_mf = min(m["metrics_with_files_s"] for m in metrics)
    best_r = min(rd["render_full_s"] for rd in renders)
    best_mc = min(m["analyze_call_cpu_s"] for m in metrics)
    best_rc = min(rd["render_full_cpu_s"] for rd in renders)
    result = {
        "metrics_s": best_m, "metrics_with_files_s": best_mf, "render_full_s": best_r,
        "ratio_metrics": best_m / best_r, "ratio_metrics_with_files": best_mf / best_r,
        "metrics_cpu_s": best_mc, "render_full_cpu_s": best_rc, "ratio_cpu": best_mc / best_rc,
        "summaries_s": summaries_s, "extrapolated": not args.full_render, "rounds": args.rounds,
        "metrics": metrics, "renders": renders, "load": os.getloadavg(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"\nmetrics of a full call: {best_m:.2f} s ({best_mf:.2f} s with the JSON + CSV files) vs rendering its "
          f"tree {best_r:.1f} s{' (extrapolated from a sample of steps)' if not args.full_render else ''}: "
          f"{100 * best_m / best_r:.1f} % ({100 * best_mf / best_r:.1f} % with files); target < 10 %")
    print(f"CPU time: metrics {best_mc:.2f} s vs rendering {best_rc:.1f} s (all processes): "
          f"{100 * best_mc / best_rc:.1f} % (a measure the machine's load hardly moves)")
    print(f"summary maps (199 maps, 3 files each): {summaries_s:.1f} s; results in {out}")


if __name__ == "__main__":
    main()
