"""The attention_viz tree on disk: safe names, paths, and writes that never leave partial files.

    {out}/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/fused_attention_on_{camera}.jpg
                                                                          /fused_attention_on_text.jpg

Files are written under a hidden temporary name in the same folder and renamed into place, so a reader (or a
later `--resume`) sees either a finished file or none. Renames are atomic against a killed process; they are
not fsync'ed (36,000 flushes per call would cost more than the render), so after a power cut a recent file may
be empty or cut short: `--resume` therefore keeps a file only if it is a complete JPEG (`is_complete_jpeg`).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from pi0viz.core.writes import output_error
from pi0viz.errors import OutputError, RenderError, SelectionError  # noqa: F401  (RenderError: re-exported)

TMP_SUFFIX = ".tmp"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")



def safe_names(names: Sequence[str], reserved: Sequence[str] = ("text",)) -> list[str]:
    """File-name-safe, unique versions of camera names (which come from data and are untrusted).

    Only [A-Za-z0-9._-] survive (anything else becomes "_"), runs of dots become "_" and leading dots are
    dropped (no hidden files, no ".."), at most 64 characters; empty or clashing names (with each other or
    with "text", the prompt map) get a numeric suffix. The result can never contain a path separator, so files stay in their folder.
    """
    out: list[str] = []
    taken = {r.lower() for r in reserved}
    for i, name in enumerate(names):
        base = re.sub(r"\.{2,}", "_", _UNSAFE.sub("_", str(name))).lstrip(".")[:64] or f"camera_{i}"
        candidate, k = base, 1
        while candidate.lower() in taken:  # case-insensitive: macOS/Windows file systems fold case
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def cell_dir(root: str, step: int, action: int, layer: int) -> str:
    """Folder of one cell under `root` (= {out}/inference_timestep_N). Indices are the original ones."""
    return os.path.join(root, f"diffusion_timestep_{step}", f"action_token_{action}", f"layer_{layer}")


def inference_dir(out_dir: str, inference_step: int) -> str:
    return os.path.join(out_dir, f"inference_timestep_{int(inference_step)}")


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + rename. Raises OutputError naming the path and the cause."""
    folder, name = os.path.split(path)
    write_atomic_in(folder, name, data)


def write_atomic_in(folder: str, name: str, data: bytes) -> None:
    """`write_atomic(folder/name, data)` without splitting the path again (36,000 files per call)."""
    path = f"{folder}{os.sep}{name}"
    tmp = f"{folder}{os.sep}.{name}.{os.getpid()}{TMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise output_error(path, err, RESUME_HINT) from None


RESUME_HINT = ("the files finished so far are intact and no partial file was left; fix that (free space, choose "
               "another --out) and run the same command again with --resume")
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def make_folder(folder: str) -> None:
    """One mkdir in the common case (parent exists, folder is new) instead of makedirs' checks; OutputError
    naming the folder and the cause otherwise."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        if not os.path.isdir(folder):
            raise OutputError(f"cannot write {folder}: it exists and is not a folder; {RESUME_HINT}") from None
    except FileNotFoundError:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise output_error(folder, err, RESUME_HINT) from None
    except OSError as err:
        raise output_error(folder, err, RESUME_HINT) from None


def is_complete_jpeg(path: str) -> bool:
    """True if `path` starts with the JPEG start-of-image marker and ends with the end-of-image marker (a file cut
    short by a crash or a full disk, an empty file or another format fail; reads 4 bytes, not the image)."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != JPEG_SOI:
                return False
            f.seek(-2, os.SEEK_END)
            return f.read(2) == JPEG_EOI
    except OSError:  # missing, or too short to seek back 2 bytes
        return False


def remove_stale_temps(folder: str) -> int:
    """Delete temporary files left in `folder` by an interrupted render; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX) and entry.is_file():
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def parse_selection(spec: str | Sequence[int] | None, available: Sequence[int], what: str) -> list[int]:
    """Which of `available` to render: None/"all" = all; "0,3-5,9" = lists and inclusive ranges.

    The numbers are the ones that appear in the output paths (original step/layer indices, action token,
    ...). A range takes the values that exist inside it (layers "0-17" of a capture that kept 2, 10, 17 ->
    2, 10, 17); a single number must exist. Raises SelectionError naming the unknown values and what exists.
    """
    available = [int(a) for a in available]
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return available
    wanted: list[int] = []
    have = set(available)
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise SelectionError(f"{what}: range {part!r} runs backwards")
                inside = [v for v in available if lo <= v <= hi]  # what exists inside it: never expanded
                if not inside:
                    raise SelectionError(f"{what}: range {part!r} holds none of this capture's {_ranges(available)}")
                wanted.extend(inside)
            elif re.fullmatch(r"\d+", part):
                wanted.append(int(part))
            else:
                raise SelectionError(f"{what}: cannot read {part!r}; use numbers and ranges like '0,3-5,9'")
    else:
        wanted = [int(v) for v in spec]
    missing = sorted(set(wanted) - have)
    if missing:
        raise SelectionError(f"{what}: {missing} not in this capture, which has {_ranges(available)}")
    keep = set(wanted)
    return [a for a in available if a in keep]


def _ranges(values: Sequence[int]) -> str:
    values = sorted(values)
    if not values:
        return "none"
    parts, start, prev = [], values[0], values[0]
    for v in list(values[1:]) + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(parts)
