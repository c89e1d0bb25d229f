"""One episode's record (and rollout video) from the results of its calls' attention tasks: a Ray task."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from pi0viz.core.media_check import check_mp4
from pi0viz.core.writes import replace_verified
from pi0viz.sweep.plan import EpisodeKey
from pi0viz.sweep.store import RunStore

VIDEO_FPS = 10  # as openpi's LIBERO example

# Per-call arrays stacked along a new first axis N (calls); the rest are the same for every call of an episode.
_STACKED = ("fused", "region_mass", "images", "actions")
_SHARED = ("keys", "region_names", "region_bounds", "camera_names", "diffusion_times", "step_indices",
           "layer_indices", "token_pieces")


def assemble_record(outcome: Mapping[str, Any], timing: Mapping[str, Any], calls: Sequence[Mapping[str, Any]],
                    video: str | None) -> dict[str, np.ndarray]:
    """The record's arrays (see pi0viz.sweep.store for the layout) from the calls' summaries in call order."""
    meta = dict(outcome, video=video)
    arrays: dict[str, np.ndarray] = {"meta": np.asarray(json.dumps(meta, sort_keys=True)),
                                     "timing": np.asarray(json.dumps(dict(timing), sort_keys=True))}
    if not calls:  # ended before its first call (an env error): outcome only
        return arrays
    for name in _STACKED:
        arrays[name] = np.stack([c[name] for c in calls])
    for name in _SHARED:
        arrays[name] = calls[0][name]
    for name in sorted(calls[0]["metrics"]):
        arrays[f"metrics/{name}"] = np.stack([np.asarray(c["metrics"][name], np.float32) for c in calls])
    return arrays


def finish_episode(run_dir: str, outcome: Mapping[str, Any], timing: Mapping[str, Any], frames: np.ndarray | None,
                   *calls: Mapping[str, Any]) -> dict[str, Any]:
    """Write the rollout video (if frames: uint8[frames, h, w, 3]) and then the record, each atomically.

    Returns the outcome with the record's path and size.
    """
    store = RunStore(run_dir)
    k = outcome["key"]
    key = EpisodeKey(k["suite"], k["task"], k["trial"], k["seed"])
    video = None
    if frames is not None and len(frames):
        video = store.video_path(key).name
        _write_video(frames, str(store.video_path(key)))
    path = store.write_record(key, assemble_record(outcome, timing, calls, video))
    return dict(outcome, record=str(path), record_bytes=os.path.getsize(path))


def _write_video(frames: np.ndarray, path: str) -> None:
    import imageio  # from the LIBERO extra (imageio[ffmpeg])

    # ffmpeg's failures (a full disk) do not raise through imageio: the file is read back before it replaces one.
    replace_verified(path, lambda tmp: imageio.mimwrite(tmp, list(frames), fps=VIDEO_FPS),
                     lambda tmp: check_mp4(tmp, frames=len(frames)), suffix=".mp4")
