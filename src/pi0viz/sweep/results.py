"""The results of a sweep: per-task success rates (as openpi's LIBERO table), throughput, and, when the
episode records carry grounding metrics, their means per task and for success vs failure.

Written to RUN_DIR/results.json and RUN_DIR/results.md from the records alone, so they can be rebuilt at any time
(`pi0viz sweep ... ` on a finished run only rewrites them).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from pi0viz.core.tables import markdown_cell
from pi0viz.core.writes import replace_together
from pi0viz.sweep.metrics_hook import ANALYSIS_STATUS
from pi0viz.sweep.plan import EpisodeKey, SweepSettings
from pi0viz.sweep.store import RunStore

PUSHED_CM = 2.0  # the reach suite: a named object moved farther than this (in the floor plane) was pushed


def collect(store: RunStore, keys: list[EpisodeKey]) -> dict[str, Any]:
    """Success table, timing and grounding summary over the finished episodes among `keys`."""
    per_task: dict[int, dict[str, Any]] = {}
    per_object: dict[str, dict[str, Any]] = {}  # the reach suite: by the named object
    timing = defaultdict(float)
    metric_sums: dict[tuple[str, str], list[float]] = defaultdict(list)  # (group, metric) -> per-episode means
    finished = 0
    for key in keys:
        row = per_task.setdefault(key.task, {"task": key.task, "prompt": "", "planned": 0, "episodes": 0,
                                             "successes": 0})
        row["planned"] += 1
        if not store.is_done(key):
            continue
        meta = store.meta(key)
        finished += 1
        row["prompt"] = meta["prompt"]
        row["episodes"] += 1
        row["successes"] += int(meta["success"])
        if "object" in meta:
            obj = per_object.setdefault(meta["object"], {"object": meta["object"], "episodes": 0, "successes": 0,
                                                         "near_at_end": 0, "pushed": 0,
                                                         "final_distance_cm": [], "target_moved_cm": []})
            obj["episodes"] += 1
            obj["successes"] += int(meta["success"])
            obj["near_at_end"] += int(bool(meta.get("near_at_end")))
            obj["pushed"] += int((meta.get("target_moved_cm") or 0.0) > PUSHED_CM)
            for name in ("final_distance_cm", "target_moved_cm"):
                if meta.get(name) is not None:
                    obj[name].append(float(meta[name]))
        for name in ("wall_s", "sim_s", "policy_s", "attention_wait_s", "setup_s"):
            timing[name] += float(meta["timing"].get(name, 0.0))
        if meta["metric_names"]:
            record = store.load_record(key)
            outcome = "success" if meta["success"] else "failure"
            for name in meta["metric_names"]:
                values = np.asarray(record[name], np.float64)
                values = values[np.isfinite(values)]
                if not values.size:  # undefined in every call (e.g. lift of a camera that never sees the objects)
                    continue
                value = float(values.mean())  # the episode's mean over its calls
                for group in (f"task {key.task}", outcome):
                    metric_sums[(group, name.removeprefix("metrics/"))].append(value)
    tasks = [dict(r, success_rate=r["successes"] / r["episodes"] if r["episodes"] else None)
             for r in sorted(per_task.values(), key=lambda r: r["task"])]
    total_eps = sum(r["episodes"] for r in tasks)
    total_ok = sum(r["successes"] for r in tasks)
    wall = timing["wall_s"]
    objects = [dict(r, success_rate=r["successes"] / r["episodes"],
                    **{n: float(np.median(r[n])) if r[n] else None for n in ("final_distance_cm", "target_moved_cm")})
               for _, r in sorted(per_object.items())]
    return {
        "tasks": tasks,
        "objects": objects,
        "total": {"planned": len(keys), "episodes": total_eps, "successes": total_ok,
                  "success_rate": total_ok / total_eps if total_eps else None},
        "timing": dict(timing, attention_wait_share=timing["attention_wait_s"] / wall if wall else None),
        "grounding": ({f"{g} / {m}": float(np.mean(v)) for (g, m), v in sorted(metric_sums.items())}
                      if metric_sums else None),
        "grounding_status": "computed" if metric_sums else ANALYSIS_STATUS,
        "finished": finished,
    }


def to_markdown(summary: dict[str, Any], settings: SweepSettings) -> str:
    """The results as a markdown page: success table first, then timing and grounding."""
    title = settings.policy + (f" ({settings.reach_baseline} baseline)" if settings.reach_baseline else "")
    lines = [f"# {settings.suite}: {title}", "",
             "| task | prompt | episodes | successes | success rate |", "|---:|---|---:|---:|---:|"]
    for r in summary["tasks"]:
        rate = "-" if r["success_rate"] is None else f"{100 * r['success_rate']:.1f} %"
        done = f"{r['episodes']}" if r["episodes"] == r["planned"] else f"{r['episodes']} of {r['planned']}"
        # the prompt comes from the benchmark's data: one escaped cell (no formula, no `|` or newline splitting rows)
        lines.append(f"| {markdown_cell(r['task'])} | {markdown_cell(r['prompt'])} | {done} | {r['successes']} | "
                     f"{rate} |")
    t = summary["total"]
    rate = "-" if t["success_rate"] is None else f"{100 * t['success_rate']:.1f} %"
    lines += [f"| **all** | | {t['episodes']} | {t['successes']} | **{rate}** |", ""]
    if summary.get("objects"):
        lines += ["## Per named object", "",
                  f"| object | episodes | successes | success rate | near at the end | target pushed > {PUSHED_CM:g} cm "
                  "| median final distance | median target pushed |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in summary["objects"]:
            cm = ["-" if r[n] is None else f"{r[n]:.1f} cm" for n in ("final_distance_cm", "target_moved_cm")]
            lines.append(f"| {markdown_cell(r['object'])} | {r['episodes']} | {r['successes']} | "
                         f"{100 * r['success_rate']:.1f} % | {r['near_at_end']} | {r['pushed']} | {cm[0]} | {cm[1]} |")
        lines.append("")
    tm = summary["timing"]
    if tm.get("wall_s"):
        lines.append(f"Episode time {tm['wall_s']:.0f} s in all: simulator {tm['sim_s']:.0f} s, waiting on the policy "
                     f"{tm['policy_s']:.0f} s, waiting on attention work {tm['attention_wait_s']:.1f} s "
                     f"({100 * tm['attention_wait_share']:.1f} % of episode time).")
        lines.append("")
    lines.append("## Grounding")
    if summary["grounding"]:
        lines += ["", "Means over episodes of each episode's mean over its calls (metrics: docs/sweep.md).", ""]
        lines += _grounding_table(summary["grounding"])
    else:
        lines += ["", summary["grounding_status"]]
    return "\n".join(lines) + "\n"


def _grounding_table(grounding: dict[str, float]) -> list[str]:
    """"group / metric" -> value as a table: one row per metric, one column per group (success, failure, tasks)."""
    cells: dict[str, dict[str, float]] = defaultdict(dict)
    for label, value in grounding.items():
        group, metric = label.split(" / ", 1)
        cells[metric][group] = value
    groups = sorted({g for row in cells.values() for g in row},
                    key=lambda g: (g != "success", g != "failure", int(g.split()[-1]) if g.startswith("task ") else 0))
    lines = ["| metric | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for metric in sorted(cells):
        row = [f"{cells[metric][g]:.4g}" if g in cells[metric] else "-" for g in groups]
        lines.append(f"| {metric} | " + " | ".join(row) + " |")
    return lines


def write_results(store: RunStore, keys: list[EpisodeKey], settings: SweepSettings) -> dict[str, Any]:
    """Write RUN_DIR/results.json and results.md; returns the summary."""
    summary = collect(store, keys)
    # one table in two forms: both written out before either replaces an older one (core.writes)
    replace_together([(store.root / "results.json", json.dumps(summary, indent=1)),
                      (store.root / "results.md", to_markdown(summary, settings))])
    return summary
