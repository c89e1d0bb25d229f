"""The run folder: one compact record per episode, written atomically, so a rerun skips what is finished.

    RUN_DIR/run.json                      the settings (a resumed run must use the same ones)
    RUN_DIR/episodes/<key>.npz            the record of a finished episode (np.savez_compressed, no pickle)
    RUN_DIR/episodes/<key>.mp4            its rollout video (optional; written before the record)
    RUN_DIR/episodes/<key>.started        marker: a worker began the episode (no record yet = partial, redone)
    RUN_DIR/results.json, results.md      per-task success table (pi0viz.sweep.results)

A record exists only once complete (core.writes.atomic_write: a temporary file, then a rename), so "finished"
is simply "the record exists".
Record arrays (calls, D' stored steps, L' stored layers, A action tokens, R drawn keys, M drawn regions):

    format            str                 RECORD_FORMAT
    meta              str                 JSON: key, prompt, success, steps, calls, error, video
    timing            str                 JSON: wall/sim/policy/attention-wait seconds (not part of the content)
    fused             float16[calls, D', L', A, R]   max over heads of the attention probability on each drawn key
    region_mass       float16[calls, D', L', A, M]   attention mass per drawn region (cameras, then the prompt)
    keys              int64[R]            indices of the drawn keys in the capture's key axis S
    region_names      str[M]; region_bounds int32[M, 2] ranges into R
    images            uint8[calls, C', h, w, 3]   the images the model saw, drawn cameras only
    camera_names      str[C']
    actions           float32[calls, A, action_dims]
    diffusion_times   float32[D']; step_indices int32[D']; layer_indices int32[L']
    token_pieces      str[R_text]         the prompt pieces drawn in the text region
    metrics/<name>    float32[N]          per-call grounding scalars (pi0viz.sweep.metrics_hook; not with --no-grounding)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pi0viz.core.writes import atomic_write, make_folder
from pi0viz.errors import ConfigError
from pi0viz.sweep.plan import RECORD_FORMAT, EpisodeKey, SweepSettings

CONTENT_EXCLUDED = ("timing",)  # arrays of a record that describe the run, not the episode


class RunStore:
    """Episode records under `root`/episodes, keyed by EpisodeKey."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.episodes = self.root / "episodes"

    def open(self, settings: SweepSettings) -> "RunStore":
        """Create the folders and run.json, or check that an existing run used the same settings."""
        make_folder(self.episodes)
        run = self.root / "run.json"
        want = settings.to_json()
        if run.is_file():
            have = json.loads(run.read_text())
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            if diff:
                raise ConfigError(f"{self.root} holds a sweep with other settings ({', '.join(diff)} differ); "
                                  "resume with the same options or choose another --out")
        else:
            atomic_write(run, json.dumps(want, indent=1))
        return self

    # -- paths and states ----------------------------------------------------------------------------

    def record_path(self, key: EpisodeKey) -> Path:
        return self.episodes / f"{key.name}.npz"

    def video_path(self, key: EpisodeKey) -> Path:
        return self.episodes / f"{key.name}.mp4"

    def started_path(self, key: EpisodeKey) -> Path:
        return self.episodes / f"{key.name}.started"

    def is_done(self, key: EpisodeKey) -> bool:
        """True when the episode's record exists (it is written only once complete)."""
        return self.record_path(key).is_file()

    def is_partial(self, key: EpisodeKey) -> bool:
        """A worker began the episode but no record exists: it will be redone from the start."""
        return self.started_path(key).is_file() and not self.is_done(key)

    def mark_started(self, key: EpisodeKey, worker: str) -> None:
        """Note which worker (name, pid) runs the episode; removed when the record is written."""
        info = {"key": key.name, "worker": worker, "pid": os.getpid()}
        atomic_write(self.started_path(key), json.dumps(info))

    # -- records -------------------------------------------------------------------------------------

    def write_record(self, key: EpisodeKey, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write the record atomically (temporary file + rename), then drop the started marker."""
        path = atomic_write(self.record_path(key),
                            lambda f: np.savez_compressed(f, format=np.asarray(RECORD_FORMAT), **arrays), durable=True)
        self.started_path(key).unlink(missing_ok=True)
        return path

    def load_record(self, key: EpisodeKey) -> dict[str, np.ndarray]:
        """All arrays of a finished episode's record."""
        with np.load(self.record_path(key), allow_pickle=False) as data:
            if str(data["format"]) != RECORD_FORMAT:
                raise ConfigError(f"{self.record_path(key)} is not a {RECORD_FORMAT} record")
            return {name: data[name] for name in data.files}

    def meta(self, key: EpisodeKey) -> dict[str, Any]:
        """The record's meta JSON plus its timing JSON under "timing" (cheap: reads two small members)."""
        with np.load(self.record_path(key), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            meta["timing"] = json.loads(str(data["timing"])) if "timing" in data.files else {}
            meta["metric_names"] = [n for n in data.files if n.startswith("metrics/")]
        return meta

    def finished(self) -> Iterator[EpisodeKey]:
        """Keys of every finished episode in the folder (from the records' meta); other .npz files there are not
        records (told apart by their format, as pi0viz.core.runs does) and are skipped."""
        from pi0viz.core.runs import bundle_format

        for path in sorted(self.episodes.glob("*.npz")):
            if bundle_format(path) != RECORD_FORMAT:
                continue
            with np.load(path, allow_pickle=False) as data:
                k = json.loads(str(data["meta"]))["key"]
            yield EpisodeKey(k["suite"], k["task"], k["trial"], k["seed"])


def record_content(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A record minus what describes the run rather than the episode (timings): compare these across runs."""
    return {k: v for k, v in arrays.items() if k not in CONTENT_EXCLUDED}

