"""The one reader of runs: what a user points at -> the inference calls, in order, grouped by episode.

Every command that reads saved captures (render, view, video, rerun, metrics, report, sweep) starts here, so a
folder means the same thing to all of them. Accepted inputs, alone or several together:

    a capture bundle              inference_007.npz (format pi0viz.capture/1: a denoising call of pi0 / pi0.5;
                                  or pi0viz.capture/2: a decoding call of pi0-FAST)
    a folder of bundles           pi0viz_demo/bundles, <episode>/bundles, a sweep's bundles/<episode>/
    an episode folder             <episode>/bundles/*.npz (or the bundles directly in it), plus side files:
                                  frames.npz, episode.json, the attention_viz tree (inference_timestep_N/ in it,
                                  or attention_viz/ as `pi0viz demo` writes it), viewer.html, ...
    a run folder                  folders of episodes (the LIBERO example's --attention-out): one episode each
    a sweep folder                run.json + episodes/<key>.npz records (+ bundles/<key>/ with --save-bundles)

Files are told apart by the `format` member of each .npz, read through the guarded `NpzReader` (only that one
small member is loaded), never by their names: a masks file renamed to inference_009.npz is still masks. The
side files pi0viz writes:

    pi0viz.capture/1         a denoising call, pi0 / pi0.5 (CAPTURE_FORMAT, kind DENOISING)
    pi0viz.capture/2         a decoding call, pi0-FAST (DECODE_FORMAT, kind DECODING)
    pi0viz.masks/1           object masks of a call's frames: NAME.masks.npz next to NAME.npz (MASKS_FORMAT)
    pi0viz.frames/1          an episode's camera frames per control step, frames.npz (FRAMES_FORMAT)
    pi0viz.sweep-episode/1   a sweep's record of one episode, episodes/<key>.npz (RECORD_FORMAT)
    pi0viz.prefix/1          the prefix's own attention of a call: NAME.prefix.npz next to NAME.npz (PREFIX_FORMAT)
    pi0viz.observation/1     a call's policy request: NAME.observation.npz next to NAME.npz (OBSERVATION_FORMAT)
    episode.json, episode_metrics.json (pi0viz.metrics/1), NAME.metrics.json: found by name (JSON)
    knockouts.json, knockout.json (`pi0viz knockout --out`): found by name in the episode folder and the folders
                             in it, two levels deep (EpisodeFiles.knockouts)

In a folder, an .npz that is none of these (or not an .npz at all) is skipped and listed in `Run.skipped`; a file
the user names explicitly must be a bundle (or a known side file such as frames.npz or masks), else one error line.
The order of the calls is each bundle's `inference_step` (a scalar member, read cheaply), else the file names' order.
Each call says its kind (`CallFile.kind`); one run holds one kind (a mix is refused in one line), and `load_call`
reads a call as the bundle class of its kind.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pi0viz.core.bundle import FORMAT as CAPTURE_FORMAT
from pi0viz.core.bundle import CaptureBundle, load_bundle
from pi0viz.core.decode_bundle import DECODE_FORMAT, DecodeBundle, load_decode_bundle
from pi0viz.core.npzfile import NpzReader
from pi0viz.core.observation_file import OBSERVATION_FORMAT, observation_path
from pi0viz.core.prefix_bundle import PREFIX_FORMAT, prefix_path
from pi0viz.errors import BundleError

# The two kinds of inference call a bundle holds, by its format.
DENOISING = "denoising"  # pi0 / pi0.5: flow-matching denoising steps (pi0viz.capture/1, CaptureBundle)
DECODING = "decoding"  # pi0-FAST: autoregressive decode steps (pi0viz.capture/2, DecodeBundle)
CALL_FORMATS = {CAPTURE_FORMAT: DENOISING, DECODE_FORMAT: DECODING}
KIND_NAMES = {DENOISING: "denoising (pi0, pi0.5; pi0viz.capture/1)",
              DECODING: "decoding (pi0-FAST; pi0viz.capture/2)"}

# The formats of pi0viz's .npz side files. Their writers live outside the core (analysis, episode, sweep), which
# the core may not import; they use the same strings, and tests/test_core_runs.py checks that they agree.
MASKS_FORMAT = "pi0viz.masks/1"
FRAMES_FORMAT = "pi0viz.frames/1"
RECORD_FORMAT = "pi0viz.sweep-episode/1"
SIDE_FORMATS = {MASKS_FORMAT: "object masks", FRAMES_FORMAT: "an episode's frames",
                RECORD_FORMAT: "a sweep's episode record", PREFIX_FORMAT: "the prefix's own attention",
                OBSERVATION_FORMAT: "a call's policy request"}
# Side files that belong to one call (NAME.<kind>.npz next to NAME.npz) or to its episode: a user may name them
# next to the bundles; a sweep's record may not (it is read from its sweep folder).
_CALL_SIDE = (MASKS_FORMAT, PREFIX_FORMAT, OBSERVATION_FORMAT)
_NAMED_SIDE = (*_CALL_SIDE, FRAMES_FORMAT)
# `pi0viz knockout --out` results (JSON, found by name): knockouts.json (key sets, pi0viz.knockout.conditions/1)
# and knockout.json (deletion / insertion curves, pi0viz.knockout/1)
KNOCKOUT_FILES = {"knockouts.json": "pi0viz.knockout.conditions/1", "knockout.json": "pi0viz.knockout/1"}
KNOCKOUT_DEPTH = 2  # <episode>/knockouts.json, <episode>/knockouts/knockouts.json, <episode>/a/b/knockouts.json
MAX_KNOCKOUTS = 20

EPISODE_FILE = "episode.json"
EPISODE_METRICS = "episode_metrics.json"
SWEEP_SETTINGS = "run.json"  # a sweep folder: RUN_DIR/run.json + RUN_DIR/episodes/
TREE_PREFIX = "inference_timestep_"
TREE_FOLDER = "attention_viz"  # where `pi0viz demo` puts its tree, next to bundles/
BUNDLES_FOLDER = "bundles"
MAX_DEPTH = 3  # run folder -> episode -> bundles: deeper folders are not searched
_FORMAT_BYTES = 1024  # a format member is a short string; a bigger one is not pi0viz's


class RunError(BundleError):
    """What the user pointed at holds no usable calls, names a file that is not a bundle, or is ambiguous.
    A Pi0vizError (through BundleError): the `pi0viz` command prints it as one line and exits 1."""


@dataclasses.dataclass(frozen=True)
class CallFile:
    """One saved inference call.

    Attributes:
        path: the capture bundle (.npz, format pi0viz.capture/1 or pi0viz.capture/2).
        inference_step: the bundle's `inference_step` member, or None when it has none.
        masks: its object masks (NAME.masks.npz next to NAME.npz, format pi0viz.masks/1), or None.
        format: the bundle's format (CAPTURE_FORMAT or DECODE_FORMAT).
        prefix: the prefix's own attention of the call (NAME.prefix.npz, format pi0viz.prefix/1), or None.
        observation: the policy request of the call (NAME.observation.npz, format pi0viz.observation/1), or None.
    """

    path: Path
    inference_step: int | None
    masks: Path | None = None
    format: str = CAPTURE_FORMAT
    prefix: Path | None = None
    observation: Path | None = None

    @property
    def kind(self) -> str:
        """DENOISING (pi0 / pi0.5, a CaptureBundle) or DECODING (pi0-FAST, a DecodeBundle)."""
        return CALL_FORMATS[self.format]


@dataclasses.dataclass
class EpisodeFiles:
    """The files of one episode.

    Attributes:
        root: the episode folder (where frames.npz, episode.json, viewer.html live); the parent of a folder
            named `bundles`.
        calls: the calls in order (inference_step, else file name).
        bundles_dir: the folder the calls are in (None for a sweep episode that saved no bundles).
        frames: frames.npz (format pi0viz.frames/1) or None.
        info: episode.json or None.
        metrics: episode_metrics.json (written by `pi0viz metrics`) or None.
        tree: the attention_viz tree (a folder of inference_timestep_N/) or None.
        record: the sweep's record of this episode (format pi0viz.sweep-episode/1) or None.
        side_files: every other recognized .npz in the episode's folders -> its format (e.g. a masks file that
            matches no call's name, or `pi0viz knockout`'s OUT/prefix.npz).
        knockouts: `pi0viz knockout` results under the episode folder (knockouts.json, knockout.json; up to
            KNOCKOUT_DEPTH folders deep, at most MAX_KNOCKOUTS, by path).
    """

    root: Path
    calls: list[CallFile] = dataclasses.field(default_factory=list)
    bundles_dir: Path | None = None
    frames: Path | None = None
    info: Path | None = None
    metrics: Path | None = None
    tree: Path | None = None
    record: Path | None = None
    side_files: dict[Path, str] = dataclasses.field(default_factory=dict)
    knockouts: list[Path] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        """A short name for messages: the episode folder's name (a sweep episode: its key)."""
        return self.record.stem if self.record is not None and self.bundles_dir is None else self.root.name

    @property
    def bundle_paths(self) -> list[Path]:
        """The calls' bundle files, in call order."""
        return [c.path for c in self.calls]

    @property
    def kind(self) -> str | None:
        """DENOISING or DECODING, the kind of every call (read_run never mixes them); None without calls."""
        return self.calls[0].kind if self.calls else None


@dataclasses.dataclass
class Run:
    """What the user pointed at, read.

    Attributes:
        inputs: the paths as given.
        episodes: every episode found, in input order (folders: sorted by path).
        sweeps: sweep folders among the inputs (run.json + episodes/).
        skipped: (path, why) of the .npz files in the folders that were neither calls nor side files.
    """

    inputs: list[Path]
    episodes: list[EpisodeFiles]
    sweeps: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)

    @property
    def calls(self) -> list[CallFile]:
        """Every call of every episode, episode by episode."""
        return [c for ep in self.episodes for c in ep.calls]

    @property
    def kind(self) -> str | None:
        """DENOISING or DECODING, the kind of every call (read_run never mixes them); None without calls."""
        calls = self.calls
        return calls[0].kind if calls else None

    def with_calls(self) -> list[EpisodeFiles]:
        """The episodes that have at least one saved call."""
        return [ep for ep in self.episodes if ep.calls]

    def single_episode(self, command: str) -> EpisodeFiles:
        """The one episode with calls that `command` works on; a RunError naming the choices when there are several."""
        found = self.with_calls()
        if not found:
            raise RunError(f"{_describe(self.inputs)} holds no capture bundles: expected bundle .npz files, an "
                           "episode folder or a sweep run with --save-bundles")
        if len(found) > 1:
            shown = ", ".join(str(ep.bundles_dir or ep.root) for ep in found[:6])
            more = f" and {len(found) - 6} more" if len(found) > 6 else ""
            raise RunError(f"{_describe(self.inputs)} holds {len(found)} episodes ({shown}{more}); {command} "
                           "works on one: point it at one of them")
        return found[0]


# -- classifying one file ------------------------------------------------------------------------------------


def bundle_format(path: str | os.PathLike) -> str | None:
    """The `format` member of an .npz (e.g. "pi0viz.capture/1"), or None when the file is not a readable .npz or
    has no short string `format`. Reads the archive's headers and that one member only (never the arrays)."""
    fmt, _ = _classify(Path(path))
    return fmt


def _classify(path: Path, want_step: bool = False) -> tuple[str | None, int | None | str]:
    """(format or None, inference_step or None); on failure (None, why)."""
    try:
        with NpzReader(path) as npz:
            header = npz.headers.get("format")
            if header is None:
                return None, "no 'format' member"
            if header.shape != () or header.dtype.kind not in "US" or header.nbytes > _FORMAT_BYTES:
                return None, "its 'format' member is not a short string"
            fmt = npz.load("format").item()
            fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else str(fmt)
            step: int | None = None
            if want_step and fmt in CALL_FORMATS:
                h = npz.headers.get("inference_step")
                if h is not None and h.shape == () and h.dtype.kind in "iu":
                    step = int(npz.load("inference_step"))
            return fmt, step
    except BundleError as err:
        return None, str(err).removeprefix(f"{path}: ")


def load_members(path: str | os.PathLike, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named members of an .npz that it holds (others left out), read through the guarded NpzReader."""
    with NpzReader(path) as npz:
        return {n: npz.load(n) for n in names if n in npz.headers}


def is_tree(folder: str | os.PathLike) -> bool:
    """True when `folder` is an attention_viz tree (holds inference_timestep_N folders)."""
    folder = Path(folder)
    try:
        return any(p.name.startswith(TREE_PREFIX) and p.is_dir() for p in folder.iterdir())
    except OSError:
        return False


def is_sweep(folder: str | os.PathLike) -> bool:
    """True when `folder` is a `pi0viz sweep` run folder (run.json and episodes/)."""
    folder = Path(folder)
    return (folder / SWEEP_SETTINGS).is_file() and (folder / "episodes").is_dir()


def find_knockouts(folder: str | os.PathLike, depth: int = KNOCKOUT_DEPTH) -> list[Path]:
    """`pi0viz knockout` results (knockouts.json, knockout.json) in `folder` and its folders, `depth` levels deep
    (hidden folders, attention_viz trees and bundles folders are not searched); at most MAX_KNOCKOUTS, by path.
    Found by name: what they hold is checked by their reader."""
    found: list[Path] = []

    def walk(where: Path, level: int) -> None:
        try:
            entries = sorted(where.iterdir(), key=_natural)
        except OSError:
            return
        for p in entries:
            if p.name in KNOCKOUT_FILES and p.is_file():
                found.append(p)
            elif level < depth and p.is_dir() and not p.name.startswith((".", TREE_PREFIX)) and \
                    p.name not in (BUNDLES_FOLDER, TREE_FOLDER, "prefix_attention"):
                walk(p, level + 1)

    walk(Path(folder), 0)
    return sorted(found)[:MAX_KNOCKOUTS]


# -- reading ---------------------------------------------------------------------------------------------------


def check_input_path(path: str | os.PathLike) -> None:
    """RunError (one line) when `path` cannot be followed: a symbolic link loop, or a path the OS refuses to
    look up (too long, no permission). `Path.is_dir` / `is_file` answer False for those, which would read as
    "no such file"; a missing path is left to the caller's own message."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RunError(f"{path} is a symbolic link loop (its links lead back to themselves); expected a bundle "
                           "file or a folder") from None
        raise RunError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:  # an embedded NUL byte
        raise RunError(f"cannot read {path!r:.200}: {err}") from None


def read_run(inputs: str | os.PathLike | Sequence[str | os.PathLike], *, allow_empty: bool = False) -> Run:
    """Read what the user pointed at (see the module doc).

    Args:
        inputs: one path or several: bundle files, known side files (frames.npz, masks) and folders.
        allow_empty: return a Run without calls instead of raising (e.g. a sweep that saved no bundles, read by
            the report from its records, or a bare attention_viz tree for the viewer).

    Returns:
        the Run; its episodes' calls are in inference_step order.

    Raises:
        RunError: a path does not exist, a named file is not a bundle, two bundles of one episode claim the same
            inference_step, or (without allow_empty) there are no calls at all.
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise RunError("no input: expected capture bundles (.npz), an episode, run or sweep folder")
    reader = _Reader()
    named: dict[tuple[Path, Path], list[tuple[Path, str, int | None]]] = {}
    for path in paths:
        check_input_path(path)
        if path.is_dir():
            reader.scan(path, 0)
        elif path.is_file():
            fmt, step = _classify(path, want_step=True)
            if fmt in CALL_FORMATS or fmt in _NAMED_SIDE:
                folder = path.parent
                named.setdefault(_roots(folder), []).append((path, fmt, step if isinstance(step, int) else None))
            elif fmt in SIDE_FORMATS:
                raise RunError(f"{path} is {SIDE_FORMATS[fmt]} ({fmt}), not a capture bundle: point at its "
                               "sweep folder instead")
            elif fmt is not None:
                raise RunError(f"{path}: unknown format {fmt!r}; expected a capture bundle ({CAPTURE_FORMAT} or "
                               f"{DECODE_FORMAT})")
            else:
                raise RunError(f"{path} is not a capture bundle ({step}); expected an .npz written by pi0viz "
                               f"({CAPTURE_FORMAT} or {DECODE_FORMAT})")
        else:
            raise RunError(f"no capture bundle at {path} (no such file or folder)")
    for (root, folder), files in named.items():
        reader.add_named(root, folder, files)
    reader.adopt_named_frames()
    run = Run(paths, reader.episodes, reader.sweeps, reader.skipped)
    _check_one_kind(run)
    if not allow_empty and not run.calls:
        sweeps = [s for s in run.sweeps]
        if sweeps:
            raise RunError(f"{sweeps[0]} is a sweep whose episodes saved no capture bundles (run pi0viz sweep with "
                           "--save-bundles to keep them); pi0viz report reads its records")
        side = [(p, fmt) for files in named.values() for p, fmt, _ in files if fmt not in CALL_FORMATS]
        if side:
            raise RunError(f"{side[0][0]} is {SIDE_FORMATS[side[0][1]]} ({side[0][1]}), not a capture bundle: "
                           f"expected the bundle .npz files (format {CAPTURE_FORMAT} or {DECODE_FORMAT}) with it")
        raise RunError(f"{_describe(paths)} holds no capture bundles: expected .npz files written by pi0viz "
                       f"({CAPTURE_FORMAT} or {DECODE_FORMAT}), e.g. <episode>/bundles/inference_000.npz")
    return run


def _check_one_kind(run: Run) -> None:
    """One run holds one kind of call: every output draws either denoising steps or decode steps, and an episode
    chart, a report or a video across both would compare different things. A mix: RunError naming both."""
    first: dict[str, Path] = {}
    for call in run.calls:
        first.setdefault(call.kind, call.path)
    if len(first) > 1:
        raise RunError(f"{_describe(run.inputs)} mixes {KIND_NAMES[DENOISING]} calls (e.g. {first[DENOISING]}) and "
                       f"{KIND_NAMES[DECODING]} calls (e.g. {first[DECODING]}): point at the bundles of one model")


def require_kind(found: "Run | EpisodeFiles", kind: str, command: str) -> None:
    """RunError (one line) unless the calls of `found` are of `kind` (DENOISING or DECODING): for an output that
    draws one kind only, e.g. require_kind(run, DENOISING, "pi0viz knockout")."""
    got = found.kind
    if got is not None and got != kind:
        where = found.inputs[0] if isinstance(found, Run) else (found.bundles_dir or found.root)
        raise RunError(f"{command} reads {KIND_NAMES[kind]} calls; {where} holds {KIND_NAMES[got]} bundles")


def load_call(call: "CallFile | str | os.PathLike") -> CaptureBundle | DecodeBundle:
    """Read one call as the bundle class of its kind: a CaptureBundle (pi0viz.capture/1) or a DecodeBundle
    (pi0viz.capture/2), validated. Raises BundleError (one line) for anything else."""
    path = call.path if isinstance(call, CallFile) else Path(call)
    fmt = call.format if isinstance(call, CallFile) else bundle_format(path)
    if fmt == DECODE_FORMAT:
        return load_decode_bundle(path)
    return load_bundle(path)  # capture/1, or its one-line error naming what was found


def _describe(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"


def _roots(folder: Path) -> tuple[Path, Path]:
    """(episode root, bundles folder) of a folder holding bundles: a folder named `bundles` belongs to its parent."""
    return (folder.parent if folder.name == BUNDLES_FOLDER else folder), folder


def _natural(path: Path) -> list:
    """File-name order with numbers compared as numbers (inference_2 before inference_10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


class _Reader:
    """Collects episodes while scanning; one EpisodeFiles per (root, bundles folder)."""

    def __init__(self) -> None:
        self.episodes: list[EpisodeFiles] = []
        self.sweeps: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        self._seen: dict[tuple[Path, Path | None], EpisodeFiles] = {}
        self._scanned: set[Path] = set()
        self._listing: dict[Path, dict[Path, tuple[str | None, int | None | str]]] = {}

    def _npz_in(self, folder: Path) -> dict[Path, tuple[str | None, int | None | str]]:
        """Every visible .npz directly in `folder` -> (format, inference_step) (cached)."""
        key = folder.resolve()
        if key not in self._listing:
            try:
                files = sorted((p for p in folder.iterdir() if p.suffix == ".npz" and not p.name.startswith(".")
                                and p.is_file()), key=_natural)
            except OSError as err:
                raise RunError(f"{folder}: cannot list ({err.strerror or err})") from None
            self._listing[key] = {p: _classify(p, want_step=True) for p in files}
        return self._listing[key]

    def scan(self, folder: Path, depth: int) -> None:
        if folder.resolve() in self._scanned:
            return
        self._scanned.add(folder.resolve())
        if is_sweep(folder):
            self._sweep(folder)
            return
        found = False
        direct = self._npz_in(folder)
        if any(fmt in CALL_FORMATS for fmt, _ in direct.values()):
            self._episode(*_roots(folder))
            found = True
        bundles = folder / BUNDLES_FOLDER
        if bundles.is_dir() and any(fmt in CALL_FORMATS for fmt, _ in self._npz_in(bundles).values()):
            self._scanned.add(bundles.resolve())
            self._episode(folder, bundles)
            found = True
        if not found:
            self._skip_unknown(direct)
        if found or depth >= MAX_DEPTH:
            return
        try:
            children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                               and not p.name.startswith(TREE_PREFIX)), key=_natural)
        except OSError as err:
            raise RunError(f"{folder}: cannot list ({err.strerror or err})") from None
        for child in children:
            self.scan(child, depth + 1)

    def _skip_unknown(self, listing: dict[Path, tuple[str | None, int | None | str]]) -> None:
        for path, (fmt, why) in listing.items():
            if fmt is None:
                self.skipped.append((path, str(why)))
            elif fmt not in CALL_FORMATS and fmt not in SIDE_FORMATS:
                self.skipped.append((path, f"unknown format {fmt!r}"))

    def _sweep(self, folder: Path) -> None:
        """A sweep: one episode per record (episodes/<key>.npz), with its saved bundles (bundles/<key>/) if any."""
        self.sweeps.append(folder)
        records = {p.stem: p for p, (fmt, _) in self._npz_in(folder / "episodes").items() if fmt == RECORD_FORMAT}
        self._skip_unknown({p: v for p, v in self._npz_in(folder / "episodes").items() if v[0] != RECORD_FORMAT})
        saved = folder / BUNDLES_FOLDER
        names = sorted(set(records) | ({p.name for p in saved.iterdir() if p.is_dir()} if saved.is_dir() else set()))
        for name in names:
            bundles = saved / name
            if bundles.is_dir():
                self._scanned.add(bundles.resolve())
                ep = self._episode(bundles, bundles)
            else:
                ep = EpisodeFiles(root=folder / "episodes")
                self.episodes.append(ep)
            ep.record = records.get(name)
            render = folder / "render" / name
            if ep.tree is None and is_tree(render):
                ep.tree = render

    def _episode(self, root: Path, folder: Path) -> EpisodeFiles:
        """The episode whose calls are the bundles in `folder` (all of them), with its side files."""
        listing = self._npz_in(folder)
        captures = [(p, step if isinstance(step, int) else None, fmt) for p, (fmt, step) in listing.items()
                    if fmt in CALL_FORMATS]
        ep = self._get(root, folder)
        ep.calls = _order(captures, folder)
        self._side_files(ep, listing)
        if root != folder:
            self._side_files(ep, {p: v for p, v in self._npz_in(root).items() if v[0] not in CALL_FORMATS})
        self._skip_unknown(listing)
        return ep

    def add_named(self, root: Path, folder: Path, files: list[tuple[Path, str, int | None]]) -> None:
        """Explicitly named files of one folder: the bundles are the calls; a named frames/masks file is attached."""
        ep = self._get(root, folder)
        captures = {c.path: (c.inference_step, c.format) for c in ep.calls}
        captures.update({p: (step, fmt) for p, fmt, step in files if fmt in CALL_FORMATS})
        ep.calls = _order([(p, step, fmt) for p, (step, fmt) in captures.items()], folder)
        self._side_files(ep, {p: (fmt, None) for p, fmt, _ in files if fmt not in CALL_FORMATS}, named=True)

    def adopt_named_frames(self) -> None:
        """A named frames.npz in the episode folder while the named bundles are in its bundles/: one episode.
        Groups of named side files without calls are dropped (their frames go to the episode of their folder, or
        to the only episode)."""
        empty = [ep for ep in self.episodes if not ep.calls and ep.record is None]
        full = [ep for ep in self.episodes if ep.calls or ep.record is not None]
        for ep in empty:
            if ep.frames is not None:
                same = [e for e in full if e.root.resolve() == ep.root.resolve()] or (full if len(full) == 1 else [])
                if len(same) == 1:
                    same[0].frames = ep.frames
        self.episodes = full

    def _get(self, root: Path, folder: Path | None) -> EpisodeFiles:
        key = (root.resolve(), folder.resolve() if folder else None)
        if key not in self._seen:
            ep = EpisodeFiles(root=root, bundles_dir=folder)
            for where in dict.fromkeys([folder, root]):
                if where is None:
                    continue
                if ep.info is None and (where / EPISODE_FILE).is_file():
                    ep.info = where / EPISODE_FILE
                if ep.metrics is None and (where / EPISODE_METRICS).is_file():
                    ep.metrics = where / EPISODE_METRICS
            if is_tree(root):
                ep.tree = root
            elif is_tree(root / TREE_FOLDER):
                ep.tree = root / TREE_FOLDER
            if folder is not None:  # a sweep episode without bundles has no folder of its own to search
                ep.knockouts = find_knockouts(root)
            self._seen[key] = ep
            self.episodes.append(ep)
        return self._seen[key]

    def _side_files(self, ep: EpisodeFiles, listing: dict[Path, tuple[str | None, int | None | str]],
                    named: bool = False) -> None:
        """Attach recognized side files: masks, prefix attention and observations to the call of the same name,
        frames to the episode, the rest to side_files. Named bundles also get the side files lying next to them
        (as metrics expects of masks)."""
        calls = {c.path.name.removesuffix(".npz") + ".masks.npz": i for i, c in enumerate(ep.calls)}
        per_call = {(prefix_path(c.path).name, PREFIX_FORMAT): (i, "prefix") for i, c in enumerate(ep.calls)}
        per_call.update({(observation_path(c.path).name, OBSERVATION_FORMAT): (i, "observation")
                         for i, c in enumerate(ep.calls)})
        for path, (fmt, why) in listing.items():
            if fmt is None and (path.name == "frames.npz" or path.name in calls):
                # a damaged side file under its own name: skipping it would give a plain video or metrics
                # without masks, silently; say what is wrong with it instead
                kind = "frames file" if path.name == "frames.npz" else "masks file"
                raise RunError(f"{path}: a damaged {kind} ({why}); expected "
                               f"{FRAMES_FORMAT if path.name == 'frames.npz' else MASKS_FORMAT}: replace or remove it")
            if fmt == MASKS_FORMAT and path.name in calls and ep.calls[calls[path.name]].masks is None:
                i = calls[path.name]
                ep.calls[i] = dataclasses.replace(ep.calls[i], masks=path)
            elif (path.name, fmt) in per_call and getattr(ep.calls[per_call[path.name, fmt][0]],
                                                          per_call[path.name, fmt][1]) is None:
                i, field = per_call[path.name, fmt]
                ep.calls[i] = dataclasses.replace(ep.calls[i], **{field: path})
            elif fmt == FRAMES_FORMAT and (ep.frames is None or named):
                ep.frames = path
            elif fmt in SIDE_FORMATS:
                ep.side_files[path] = fmt
        if named:
            for i, call in enumerate(ep.calls):
                for field, fmt, candidate in (("masks", MASKS_FORMAT, call.path.with_name(
                        call.path.name.removesuffix(".npz") + ".masks.npz")),
                        ("prefix", PREFIX_FORMAT, prefix_path(call.path)),
                        ("observation", OBSERVATION_FORMAT, observation_path(call.path))):
                    if getattr(ep.calls[i], field) is None and candidate.is_file() and \
                            bundle_format(candidate) == fmt:
                        ep.calls[i] = dataclasses.replace(ep.calls[i], **{field: candidate})


def _order(captures: list[tuple[Path, int | None, str]], folder: Path) -> list[CallFile]:
    """Calls (path, inference_step, format) by inference_step (all known), else by file name; two bundles with one
    inference_step: RunError."""
    steps = [s for _, s, _ in captures if s is not None]
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        names = sorted(p.name for p, s, _ in captures if s == dup[0])
        raise RunError(f"{folder}: two bundles claim inference_step {dup[0]} ({', '.join(names)}): expected one "
                       "bundle per inference call of an episode")
    if len(steps) == len(captures):
        ordered = sorted(captures, key=lambda c: (c[1], _natural(c[0])))
    else:
        ordered = sorted(captures, key=lambda c: _natural(c[0]))
    return [CallFile(p, s, format=f) for p, s, f in ordered]


__all__ = ["CAPTURE_FORMAT", "DECODE_FORMAT", "MASKS_FORMAT", "FRAMES_FORMAT", "RECORD_FORMAT", "PREFIX_FORMAT",
           "OBSERVATION_FORMAT", "KNOCKOUT_FILES", "DENOISING", "DECODING", "CALL_FORMATS", "CallFile",
           "EpisodeFiles", "Run", "RunError", "bundle_format", "find_knockouts", "is_sweep", "is_tree", "load_call",
           "load_members", "read_run", "require_kind"]
