"""The attention_viz tree on disk: safe names, paths, and writes that never leave partial files.

    {out}/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/fused_attention_on_{camera}.jpg
                                                                          /fused_attention_on_text.jpg
    {out}/inference_timestep_N/decode_step_J/layer_L/fused_attention_on_{camera|text|generated}.jpg   (pi0-FAST)

Files are written under a hidden temporary name in the same folder and renamed into place, so a reader (or a
later `--resume`) sees either a finished file or none. Renames are atomic against a killed process; they are
not fsync'ed (36,000 flushes per call would cost more than the render), so after a power cut a recent file may
be empty or cut short: `--resume` therefore keeps a file only if it is a complete JPEG (`is_complete_jpeg`).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from pi0viz.core.selection import folder_index
from pi0viz.core.writes import TMP_SUFFIX, output_error, write_in
from pi0viz.errors import OutputError, RenderError  # noqa: F401  (RenderError: re-exported)

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


def decode_cell_dir(root: str, step: int, layer: int) -> str:
    """Folder of one pi0-FAST cell under `root` (= {out}/inference_timestep_N): decode_step_J/layer_L."""
    return os.path.join(root, f"decode_step_{step}", f"layer_{layer}")


def inference_dir(out_dir: str, inference_step: int) -> str:
    # The one place a call's index becomes a folder name: refused, never rounded (1.5 would overwrite call 1).
    step = folder_index(inference_step, "the inference step (inference_step)", RenderError)
    return os.path.join(out_dir, f"inference_timestep_{step}")


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + rename. Raises OutputError naming the path and the cause."""
    folder, name = os.path.split(path)
    write_atomic_in(folder, name, data)


def write_atomic_in(folder: str, name: str, data: bytes) -> None:
    """`write_atomic(folder/name, data)` without splitting the path again (36,000 files per call): the one
    writer's hot path (`pi0viz.core.writes.write_in`: same mode and cleanup)."""
    write_in(folder, name, data, RESUME_HINT)


RESUME_HINT = ("the files finished so far are intact and no partial file was left; fix that (free space, choose "
               "another --out) and run the same command again with --resume")
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def make_cell_folder(folder: str) -> None:
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
