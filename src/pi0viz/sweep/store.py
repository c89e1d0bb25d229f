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
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from pi0viz.core.npzfile import NpzReader
from pi0viz.core.writes import atomic_write, make_folder
from pi0viz.errors import BundleError, ConfigError
from pi0viz.sweep.plan import RECORD_FORMAT, EpisodeKey, SweepSettings

CONTENT_EXCLUDED = ("timing",)  # arrays of a record that describe the run, not the episode


class RunStore:
    """Episode records under `root`/episodes, keyed by EpisodeKey."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.episodes = self.root / "episodes"

    def open(self, settings: SweepSettings, echo: Callable[[str], None] | None = None) -> "RunStore":
        """Create the folders and run.json, or check that an existing run used the same settings.

        run.json binds a folder to its settings only once an episode was finished under them: a run refused or
        stopped before its first record (a policy that failed to load, a cluster that was not there) leaves a
        run.json that the corrected rerun simply replaces, so a refusal never poisons its folder.
        Raises:
            ConfigError when records exist and run.json is unreadable or records other settings.
        """
        make_folder(self.episodes)
        run = self.root / "run.json"
        want = settings.to_json()
        if run.is_file():
            try:
                have = json.loads(run.read_text(encoding="utf-8"))
                if not isinstance(have, dict):
                    raise ValueError("not a JSON object")
                diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
                problem = f"{', '.join(diff)} differ" if diff else ""
            except (OSError, ValueError) as err:  # a half-written or foreign run.json
                problem = f"its run.json is unreadable ({_first_line(err)})"
            if problem and self.has_records():
                raise ConfigError(f"{self.root} holds a sweep with other settings ({problem}); "
                                  "resume with the same options or choose another --out")
            if problem:
                if echo is not None:
                    echo(f"sweep: replacing {run}: it came from a run that finished no episode ({problem})")
                atomic_write(run, json.dumps(want, indent=1))
        else:
            atomic_write(run, json.dumps(want, indent=1))
        return self

    def has_records(self) -> bool:
        """True when any episode record (a file named like one, whole or not) is in the folder."""
        return self.episodes.is_dir() and any(self.episodes.glob("*.npz"))

    # -- paths and states ----------------------------------------------------------------------------

    def record_path(self, key: EpisodeKey) -> Path:
        return self.episodes / f"{key.name}.npz"

    def video_path(self, key: EpisodeKey) -> Path:
        return self.episodes / f"{key.name}.mp4"

    def started_path(self, key: EpisodeKey) -> Path:
        return self.episodes / f"{key.name}.started"

    def is_done(self, key: EpisodeKey) -> bool:
        """True when the episode's record exists and checks out (`record_problem`): a resumed run trusts it."""
        return self.record_path(key).is_file() and self.record_problem(key) is None

    def record_problem(self, key: EpisodeKey) -> str | None:
        """Why the episode's record cannot be trusted, or None when it can (or there is none).

        Read from the headers through the guarded reader (core.npzfile), plus the small `format` and `meta`
        members: it opens as an .npz, has every array of the layout in this module's docstring, the shapes agree
        with each other (calls, D', L', A, R, M, C'), and its meta names this episode. An empty or truncated
        file (a disk that filled, a copy cut short) fails here and the episode is redone.
        """
        path = self.record_path(key)
        if not path.is_file():
            return None
        try:
            with NpzReader(path) as npz:
                return _layout_problem(npz, key)
        except BundleError as err:
            return str(err).removeprefix(f"{path}: ")

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
        with NpzReader(self.record_path(key)) as data:  # guarded: headers checked first, no pickle
            if "format" not in data.headers or str(data.load("format")) != RECORD_FORMAT:
                raise ConfigError(f"{self.record_path(key)} is not a {RECORD_FORMAT} record")
            return {name: data.load(name) for name in data.headers}

    def meta(self, key: EpisodeKey) -> dict[str, Any]:
        """The record's meta JSON plus its timing JSON under "timing" (cheap: reads two small members)."""
        path = self.record_path(key)
        with NpzReader(path) as data:  # guarded: headers checked first, no pickle
            meta = _json_member(data, "meta", path)
            meta["timing"] = _json_member(data, "timing", path) if "timing" in data.headers else {}
            meta["metric_names"] = [n for n in data.headers if n.startswith("metrics/")]
        return meta

    def finished(self) -> Iterator[EpisodeKey]:
        """Keys of every finished episode in the folder (from the records' meta); other .npz files there are not
        records (told apart by their format, as pi0viz.core.runs does) and are skipped."""
        from pi0viz.core.runs import bundle_format

        for path in sorted(self.episodes.glob("*.npz")):
            if bundle_format(path) != RECORD_FORMAT:
                continue
            with NpzReader(path) as data:
                k = _json_member(data, "meta", path).get("key")
            try:
                yield EpisodeKey(k["suite"], k["task"], k["trial"], k["seed"])
            except (TypeError, KeyError):
                raise ConfigError(f"{path}: its meta has no episode key (suite, task, trial, seed)") from None


def _json_member(data: NpzReader, name: str, path: Path) -> dict[str, Any]:
    """A record's JSON member (a string array) as a dict; ConfigError naming the file if it is not one."""
    try:
        value = json.loads(str(data.load(name))) if name in data.headers else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: its {name!r} member is not a JSON object (a damaged {RECORD_FORMAT} record)")
    return value


# Arrays of a record with calls, by axis letters (N = calls, r = any size): every one must be there with these
# dimensions, and one letter means one size across the record.
_RECORD_AXES = {"fused": "NDLAR", "region_mass": "NDLAM", "keys": "R", "region_names": "M", "region_bounds": "Mr",
                "images": "NCrrr", "camera_names": "C", "actions": "Nrr", "diffusion_times": "D", "step_indices": "D",
                "layer_indices": "L", "token_pieces": "r"}


def _layout_problem(npz: NpzReader, key: EpisodeKey) -> str | None:
    """Why an open record does not fit the layout or is not `key`'s, or None (see RunStore.record_problem)."""
    missing = [n for n in ("format", "meta") if n not in npz.headers]
    if missing:
        return f"has no {missing} array (an episode record has format and meta)"
    if str(npz.load("format")) != RECORD_FORMAT:
        return f"is not a {RECORD_FORMAT} record"
    try:
        meta = json.loads(str(npz.load("meta")))
        k = meta["key"]
        have = (k["suite"], k["task"], k["trial"], k["seed"])
    except (KeyError, TypeError, ValueError) as err:
        return f"its meta is unreadable ({_first_line(err)})"
    if have != (key.suite, key.task, key.trial, key.seed):
        return f"its meta names another episode ({have})"
    if not meta.get("calls") and not any(n in npz.headers for n in _RECORD_AXES):
        return None  # ended before its first call: outcome only (sweep.finish.assemble_record)
    missing = [n for n in _RECORD_AXES if n not in npz.headers]
    if missing:
        return f"has no {missing} array{'s' if len(missing) > 1 else ''} (the record is incomplete)"
    sizes: dict[str, int] = {}
    for name, axes in _RECORD_AXES.items():
        shape = npz.headers[name].shape
        if len(shape) != len(axes):
            return f"array {name!r} has shape {list(shape)}, expected {len(axes)} dimensions ({axes})"
        for letter, size in zip(axes, shape):
            if letter != "r" and sizes.setdefault(letter, size) != size:
                return f"array {name!r} has shape {list(shape)}: its {letter} = {size} disagrees with {sizes[letter]}"
    for name, header in npz.headers.items():
        if name.startswith("metrics/") and header.shape[:1] != (sizes["N"],):
            return f"array {name!r} has shape {list(header.shape)}, expected {sizes['N']} calls first"
    if isinstance(meta.get("calls"), int) and meta["calls"] != sizes["N"]:
        return f"its meta says {meta['calls']} calls, its arrays hold {sizes['N']}"
    return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def record_content(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A record minus what describes the run rather than the episode (timings): compare these across runs."""
    return {k: v for k, v in arrays.items() if k not in CONTENT_EXCLUDED}

