"""Writing output files: OS errors become one line naming the path and the cause, and a file is either
replaced whole or not at all (temporary file in the same folder + rename; the temporary is removed on failure).

Causes are worded for the user: a read-only folder, a path that runs through a file, a full disk and a file
system out of inodes (both ENOSPC) are the common ones.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from pi0viz.errors import OutputError

_CAUSES = {
    errno.ENOSPC: "no space or inodes left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "it exists and is not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
}
FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_cause(err: OSError) -> str:
    """A short, user-facing cause for an OSError (its errno), e.g. "read-only file system"."""
    return _CAUSES.get(err.errno, err.strerror or type(err).__name__)


def output_error(path: str | os.PathLike, err: OSError, hint: str = "") -> OutputError:
    """OutputError "cannot write PATH: CAUSE[; HINT]" for an OSError raised while writing `path`."""
    where = os.fspath(path)
    cause = os_error_cause(err)
    if err.errno in FULL:
        cause = f"disk full ({cause})"
    return OutputError(f"cannot write {where}: {cause}" + (f"; {hint}" if hint else ""))


def make_folder(path: str | os.PathLike, hint: str = "") -> Path:
    """`mkdir -p path`, or OutputError naming the path and the cause (also when `path` is an existing file)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # exists as a file (mkdir's exist_ok only covers folders)
        raise OutputError(f"cannot write {path}: it exists and is not a folder" + (f"; {hint}" if hint else "")) \
            from None
    except OSError as err:
        raise output_error(path, err, hint) from None
    return path


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None], *, durable: bool = False,
                 hint: str = "") -> Path:
    """Replace `path` with `data` whole: write a hidden temporary next to it, then rename it into place.

    Args:
        data: the content, or a function that writes it to the open file (streams large content).
        durable: also fsync the file and its folder, so the new content survives a power cut (costs a disk
            flush; used for one-per-call files such as bundles, not for the 36,000 JPEGs of a render).
    Raises:
        OutputError naming the path and the cause; the temporary is removed and an older `path` is untouched.
    """
    path = Path(path)
    make_folder(path.parent, hint)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if durable:
            fsync_folder(path.parent)
    except OSError as err:
        raise output_error(path, err, hint) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
