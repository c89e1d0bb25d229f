"""Metrics files for saved calls: per call, per episode, next to the bundles.

    episode_dir/
        episode.json                       written by the LIBERO example: suite, task, trial, prompt, success, ...
        bundles/inference_007.npz          the capture bundle
        bundles/inference_007.masks.npz    object masks of the frames the policy saw (optional; masks.py)
        bundles/inference_007.metrics.json per call: region masses, sinks, grounding summary (analyze_call)
        bundles/inference_007.grounding.csv  per (step, layer, action token) grounding metrics (with masks)
        bundles/episode_metrics.json       per episode: the calls' summaries in order + episode means

A folder of bundles is one episode; the episode's outcome comes from `episode.json` in the folder or its parent
(absent: unknown). `pi0viz report` aggregates episodes per task and by success vs failure.

pi0-FAST decoding bundles (pi0viz.capture/2, e.g. `pi0viz demo --model pi0-fast`) are measured the same way over
their decode steps (one query per step; the "step" of every file is the decode step); their records say
"call_kind": "decoding", their regions end with "generated" (the tokens generated so far).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pi0viz.analysis import grounding as G
from pi0viz.analysis.maps import ActionMaps, DecodeKeyMaps, action_maps, decode_key_maps
from pi0viz.analysis.masks import load_masks, masks_for_bundle, masks_path
from pi0viz.analysis.sinks import SinkCriterion, find_decode_sinks, find_sinks, sink_report
from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.tables import csv_text
from pi0viz.core.writes import StagedFiles, atomic_write
from pi0viz.errors import AnalysisError

METRICS_FORMAT = "pi0viz.metrics/1"
DECODING = "decoding"  # "call_kind" of a pi0-FAST call's metrics (pi0viz.core.runs.DECODING); absent: denoising
EPISODE_FILE = "episode.json"
EPISODE_METRICS = "episode_metrics.json"


def region_masses(maps: ActionMaps | DecodeKeyMaps) -> dict[str, Any]:
    """Head-mean attention mass per key region (every drawn camera, the prompt, state, actions), averaged over the
    action tokens: {"names": [M], "kinds": [M], "mass": [M][D][L]}. Padded cameras (pi0viz.core.maps' rule) are
    left out. A decoding call: each decode step's query, regions the drawn cameras, the prompt ("text") and the
    tokens generated so far ("generated"): "mass" [M][J][L]."""
    regions = maps.regions
    per_key = maps.mean if isinstance(maps, DecodeKeyMaps) else maps.mean.mean(axis=2)  # [D, L, S]
    mass = np.stack([per_key[..., r.slice].sum(axis=-1) for r in regions])  # [M, D, L]
    return {"names": [r.name for r in regions], "kinds": [r.kind for r in regions],
            "mass": np.round(mass, 6).tolist()}


def analyze_call(bundle: CaptureBundle | DecodeBundle, *, coverage: np.ndarray | None = None,
                 has_mask: np.ndarray | None = None, objects: Sequence[str] = (),
                 criterion: SinkCriterion | None = None, batch: int = 0,
                 source: str = "") -> tuple[dict[str, Any], G.CallGrounding | None]:
    """Everything measured on one call.

    Args:
        bundle: the call: a denoising call (CaptureBundle) or a pi0-FAST decoding call (DecodeBundle: every
            number is over its decode steps, each step's one query in the action tokens' place; sinks by
            `find_decode_sinks`).
        coverage: float[C, rows, cols] object coverage per camera slot (None: no grounding metrics).
        has_mask: bool[C] which slots have a mask.
        objects: names of the objects the masks cover (for the record).
        criterion: the sink criterion.

    Returns:
        (JSON-ready dict {"format", "call", "source", "prompt", "regions", "sinks", "grounding" (or None)}, plus
         "call_kind": "decoding" for a decoding call, the CallGrounding for the CSV, or None without masks).
    """
    decoding = isinstance(bundle, DecodeBundle)
    maps: ActionMaps | DecodeKeyMaps = decode_key_maps(bundle, batch=batch) if decoding \
        else action_maps(bundle, batch=batch)
    pieces = [str(p) for p in bundle.token_pieces[batch]]
    sinks = find_decode_sinks(maps, criterion) if decoding else find_sinks(maps, criterion)
    g = None
    summary = None
    if coverage is not None:
        has = has_mask if has_mask is not None else [True] * len(coverage)
        g = G.decode_grounding(maps, coverage, has, bundle.image_masks[batch]) if decoding \
            else G.call_grounding(maps, coverage, has, bundle.image_masks[batch])
        summary = dict(G.grounding_summary(g), objects=list(objects))
    call = int(bundle.inference_step) if bundle.inference_step is not None else None
    record: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "call": call,
        "source": source,
        "prompt": str(bundle.prompt[batch]) if bundle.prompt is not None else "",
        "heads_fused": maps.heads_fused,
        "regions": region_masses(maps),
        "sinks": sink_report(sinks, maps, pieces),
        "grounding": summary,
    }
    if decoding:  # the steps are decode steps; each names the token it generated
        record["call_kind"] = DECODING
        record["generated"] = [str(p) for p in bundle.pieces(batch)]
    return record, g


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomic JSON write (NaN is refused: every metric is cleaned to None first)."""
    return atomic_write(path, json.dumps(data, allow_nan=False))


def read_episode_info(folder: Path) -> dict[str, Any]:
    """episode.json of an episode (in the bundles' folder or its parent), or {} when there is none."""
    for candidate in (folder / EPISODE_FILE, folder.parent / EPISODE_FILE):
        if candidate.is_file():
            try:
                info = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise AnalysisError(f"{candidate}: unreadable episode record ({err})") from None
            if not isinstance(info, dict):
                raise AnalysisError(f"{candidate}: expected a JSON object")
            return info
    return {}


def record_info(record: Path) -> dict[str, Any]:
    """What a sweep's episode record says of its episode, as episode.json would: suite, task_id, trial, prompt,
    success, steps (read from its small `meta` member only)."""
    from pi0viz.core.runs import load_members

    try:
        meta = json.loads(str(load_members(record, ["meta"])["meta"]))
        key = meta["key"]
        return {"suite": key["suite"], "task_id": key["task"], "trial": key["trial"], "prompt": meta.get("prompt", ""),
                "success": meta.get("success"), "steps": meta.get("steps"), "inference_calls": meta.get("calls")}
    except (KeyError, TypeError, ValueError) as err:
        raise AnalysisError(f"{record}: unreadable sweep record meta ({err})") from None


def analyze_bundles(paths: Sequence[str | os.PathLike], *, masks_dir: str | os.PathLike | None = None,
                    require_masks: bool = False, criterion: SinkCriterion | None = None,
                    csv: bool = True, log=None) -> list[Path]:
    """Metrics files for saved bundles, grouped into episodes by folder. Returns the episode_metrics.json paths.

    Args:
        paths: bundle files (.npz) and/or folders (a bundles, episode, run or sweep folder), read by
            pi0viz.core.runs: masks, frames and other side files are never taken for calls.
        masks_dir: where the .masks.npz files are (default: next to each bundle).
        require_masks: fail when a bundle has no masks (default: sinks and masses only for that call).
        csv: also write the per-cell grounding CSV.
    """
    from pi0viz.core.runs import load_call, read_run

    run = read_run(paths)  # RunError (a Pi0vizError) when there is no bundle or a named file is not one
    written = []
    for episode in run.with_calls():
        folder = episode.bundles_dir or episode.root
        calls = []
        # An episode's files are one output: a full disk or a read-only folder midway must not leave some calls'
        # files new and others old beside an episode_metrics.json that looks complete. Each temporary is written
        # as its call is measured (one call's CSV in memory at a time); all are renamed at the end, the summary last.
        with StagedFiles() as staged:  # an exception before the commit removes every temporary
            for call in episode.calls:
                path = call.path
                bundle = load_call(call)  # a denoising or a decoding (pi0-FAST) call
                mpath = (call.masks or masks_path(path)) if masks_dir is None \
                    else Path(masks_dir) / masks_path(path).name
                coverage = has = None
                objects: list[str] = []
                if mpath.is_file():
                    masks = load_masks(mpath)
                    coverage, has = masks_for_bundle(masks, bundle.camera_names)
                    objects = masks.objects
                elif require_masks:
                    raise AnalysisError(f"{path}: no masks at {mpath}")
                record, g = analyze_call(bundle, coverage=coverage, has_mask=has, objects=objects, criterion=criterion,
                                         source=path.name)
                if record["call"] is None:
                    record["call"] = len(calls)
                stem = path.name.removesuffix(".npz")
                staged.add(path.with_name(stem + ".metrics.json"), json.dumps(record, allow_nan=False))
                if g is not None and csv:
                    staged.add(path.with_name(stem + ".grounding.csv"), csv_text(*G.csv_table(g, call=record["call"])))
                calls.append(record)
                if log:
                    log(f"{path}: metrics{' + grounding' if g is not None else ''}")
            calls.sort(key=lambda r: r["call"])
            info = read_episode_info(folder) or (record_info(episode.record) if episode.record else {})
            staged.add(folder / EPISODE_METRICS, json.dumps(episode_record(calls, info), allow_nan=False))
            written.append(staged.commit()[-1])
    return written


def episode_record(calls: Sequence[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Per episode: the outcome (from episode.json), each call's summary, and the episode means."""
    grounded = [c["grounding"] for c in calls if c.get("grounding")]
    return {
        "format": METRICS_FORMAT,
        "episode": info,
        "calls": [{"call": c["call"], "source": c["source"], "prompt": c["prompt"], "regions": c["regions"],
                   "sink_share": c["sinks"]["share"], "sink_keys": c["sinks"]["keys"][:10],
                   "grounding": c.get("grounding"),
                   **({"call_kind": c["call_kind"]} if "call_kind" in c else {})} for c in calls],
        "grounding": G.aggregate(grounded) if grounded else None,
    }
