"""Writing output files: the one writer. Every file pi0viz writes is replaced whole or not at all, ends up with
the mode a plain `open()` would give it (0o666 & ~umask; folders 0o777 & ~umask), and OS errors become one line
naming the path and the cause.

    atomic_write(path, data)               bytes, text or a streaming callable -> a hidden temporary in the same
                                           folder, renamed into place (JSON, CSV, HTML, NPZ, YAML)
    write_in(folder, name, data)           the same for hot loops (the 36,000 JPEGs of a render tree)
    StagedFiles / replace_together         several files as one output (metrics: per call, then the episode's):
                                           every temporary written before the first rename
    replace_verified(path, produce, verify)  encoders that write their own files (ffmpeg, Rerun): `produce`
                                           writes the temporary, `verify` reads it back, only then is it renamed
    PendingFile(path, verify)              the same when the encoder outlives one call (a live Rerun log)
    StagedFolder(path) / replace_folder    a folder output (the viewer's side data, a checkpoint's params):
                                           built under a hidden name, swapped in whole

On any failure the temporary is removed and an older `path` stays byte-identical. Temporaries are named
`.<name>.<token>.tmp` (encoders: `.<stem>.<token>.tmp<suffix>`, so they pick the format from the suffix).

Causes are worded for the user: a read-only folder, a path that runs through a file, a full disk and a file
system out of inodes (both ENOSPC) are the common ones. An encoder that hits a full disk often reports a broken
pipe or nothing at all; a failure while the folder's file system is (nearly) full is reported as a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

from pi0viz.errors import OutputError, Pi0vizError

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
TMP_SUFFIX = ".tmp"
# Created with these and the kernel applies the umask (and a folder's default ACL), exactly as open()/mkdir() do.
_FILE_CREATE = 0o666
_FOLDER_CREATE = 0o777
_NEW = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_NEARLY_FULL_BYTES = 1 << 20  # an encoder failing with less free than this is reported as a full disk


def os_error_cause(err: OSError) -> str:
    """A short, user-facing cause for an OSError (its errno), e.g. "read-only file system"."""
    if err.errno in _CAUSES:
        return _CAUSES[err.errno]
    if err.strerror:
        return err.strerror
    text = str(err).strip().splitlines()  # e.g. imageio's IOError: a message of many lines, no errno
    return text[0] if text else type(err).__name__


def output_error(path: str | os.PathLike, err: OSError, hint: str = "") -> OutputError:
    """OutputError "cannot write PATH: CAUSE[; HINT]" for an OSError raised while writing `path`."""
    cause = os_error_cause(err)
    if err.errno in FULL:
        cause = f"disk full ({cause})"
    return _cannot(path, cause, hint)


def _cannot(path: str | os.PathLike, cause: str, hint: str = "") -> OutputError:
    return OutputError(f"cannot write {os.fspath(path)}: {cause}" + (f"; {hint}" if hint else ""))


# -- the mode a plain open() gives ---------------------------------------------------------------------------

_umask: int | None = None
_umask_lock = threading.Lock()


def umask() -> int:
    """The process's umask, read once per process (thread-safe; a forked worker inherits both)."""
    global _umask
    if _umask is None:
        with _umask_lock:
            if _umask is None:
                _umask = _read_umask()
    return _umask


def _read_umask() -> int:
    try:  # Linux >= 4.7 shows it without changing it
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way to read it is to set it; put it back at once (under the lock, so pi0viz's own
    # threads never see the placeholder).
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The permission bits of a file created by a plain open(): 0o666 & ~umask (0o644 under umask 022)."""
    return _FILE_CREATE & ~umask()


def folder_mode() -> int:
    """The permission bits of a folder created by a plain mkdir(): 0o777 & ~umask."""
    return _FOLDER_CREATE & ~umask()


# -- shared steps ------------------------------------------------------------------------------------------


def _token() -> str:
    return secrets.token_hex(4)


def _write_all(fd: int, data: str | bytes | bytearray | memoryview) -> None:
    """Write all of `data` (text as UTF-8) to `fd`: os.write may write less than it is given."""
    view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
    while view:
        view = view[os.write(fd, view):]


def _discard(tmp: str | os.PathLike) -> None:
    """Remove a temporary file or folder; never raises (it is cleanup on the way out of a failure)."""
    try:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.unlink(tmp)
    except OSError:
        pass


def _nearly_full(folder: str | os.PathLike) -> bool:
    """True when the file system of `folder` has under 1 MiB or no inodes left (for encoders that hide ENOSPC)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    return free < _NEARLY_FULL_BYTES or (st.f_files > 0 and st.f_favail == 0)


def _not_writable(folder: str | os.PathLike) -> int | None:
    """EROFS when `folder` is on a read-only file system, EACCES when this process may not create files in it,
    else None (for encoders that report either as a broken pipe or a message of their own)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return errno.EROFS
    except (OSError, AttributeError):
        return None
    return None if os.access(folder, os.W_OK | os.X_OK) else errno.EACCES


def make_folder(path: str | os.PathLike, hint: str = "") -> Path:
    """`mkdir -p path`, or OutputError naming the path and the cause (also when `path` is an existing file)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # exists as a file (mkdir's exist_ok only covers folders)
        raise _cannot(path, "it exists and is not a folder", hint) from None
    except OSError as err:
        raise output_error(path, err, hint) from None
    return path


@contextlib.contextmanager
def new_folders(*paths: str | os.PathLike, hint: str = "") -> Iterator[list[Path]]:
    """Create `paths` (`make_folder`: an unwritable place fails at once, before the slow part); if the block
    raises, remove again every folder this call created that is still empty (deepest first), so a command that
    fails before it writes anything (a demo whose policy does not load) leaves no empty output folders.
    Folders that existed before are never removed. Yields the paths."""
    fresh: list[Path] = []
    for path in map(Path, paths):
        for folder in (*reversed(path.parents), path):
            if folder not in fresh and not os.path.lexists(folder):
                fresh.append(folder)
    try:
        for path in paths:
            make_folder(path, hint)
        yield [Path(p) for p in paths]
    except BaseException:
        for folder in reversed(fresh):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty: what the block did write stays
        raise


# -- files we write ourselves ---------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None], *, durable: bool = False,
                 hint: str = "", before_replace: Callable[[], None] | None = None) -> Path:
    """Replace `path` with `data` whole: write a hidden temporary next to it, then rename it into place.

    Args:
        data: the content (str is written as UTF-8), or a function that writes it to the open binary file
            (streams large content: np.savez to it, CSV rows, ...).
        durable: also fsync the file and its folder, so the new content survives a power cut (costs a disk
            flush; used for one-per-call files such as bundles, not for the 36,000 JPEGs of a render).
        before_replace: called once the temporary is complete, right before the rename (e.g. swap in a page's
            side folder first); if it raises, the temporary is removed and `path` is untouched.
    Returns:
        `path`, with mode 0o666 & ~umask.
    Raises:
        OutputError naming the path and the cause; the temporary is removed and an older `path` is untouched.
        Whatever `data` or `before_replace` raise (besides OSError) passes through, after the same cleanup.
    """
    path = Path(path)
    make_folder(path.parent, hint)
    tmp = None
    try:
        for _ in range(100):  # a random name, created exclusively (never another writer's temporary)
            candidate = path.with_name(f".{path.name}.{_token()}{TMP_SUFFIX}")
            try:
                fd = os.open(candidate, _NEW | os.O_EXCL, _FILE_CREATE)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if os.path.isdir(path) and not os.path.islink(path):  # the rename would fail after before_replace ran
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        tmp = None
        if durable:
            fsync_folder(path.parent)
    except OSError as err:
        raise output_error(path, err, hint) from None
    finally:
        if tmp is not None:
            _discard(tmp)
    return path


class StagedFiles:
    """Several files replaced as one output (a call's metrics JSON and CSV, an episode's summary of them):
    `add` writes each one's temporary at once (memory holds one file at a time), `commit` renames them all into
    place in the order added (add the file that marks the set complete last), `abort` removes the temporaries.
    A full disk, a read-only folder or a target that is a folder fails in `add`, before the first rename: every
    older file stays byte-identical and no temporary is left. Use as a context manager: leaving the block by an
    exception aborts.
    """

    def __init__(self, *, hint: str = "") -> None:
        self.hint = hint
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final)

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:
            self.abort()

    def add(self, path: str | os.PathLike, data: bytes | str) -> None:
        """Write `path`'s new content to its temporary (nothing is replaced yet).

        Raises:
            OutputError naming `path` and the cause; every temporary of the set is removed.
        """
        final = Path(path)
        tmp = None
        try:
            make_folder(final.parent, self.hint)
            if os.path.isdir(final) and not os.path.islink(final):  # the rename in commit would fail midway
                raise _cannot(final, "it is a folder", self.hint)
            tmp = final.with_name(f".{final.name}.{_token()}{TMP_SUFFIX}")
            fd = os.open(tmp, _NEW | os.O_EXCL, _FILE_CREATE)
            self._staged.append((tmp, final))
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as err:
            self.abort()
            raise output_error(final, err, self.hint) from None
        except BaseException:
            self.abort()
            raise

    def commit(self) -> list[Path]:
        """Rename every temporary into place, in the order added. Returns the paths (mode 0o666 & ~umask)."""
        final = None
        try:
            for tmp, final in self._staged:
                os.replace(tmp, final)
        except OSError as err:
            self.abort()
            raise output_error(final or "", err, self.hint) from None
        done, self._staged = [f for _, f in self._staged], []
        return done

    def abort(self) -> None:
        """Remove the temporaries not yet renamed (older files are untouched)."""
        for tmp, _ in self._staged:
            if os.path.lexists(tmp):
                _discard(tmp)
        self._staged = []


def replace_together(files: Sequence[tuple[str | os.PathLike, bytes | str]], *, hint: str = "") -> list[Path]:
    """`StagedFiles` for contents at hand: every temporary written before the first rename, then all renamed in
    the order given. Returns the paths; OutputError naming the path that failed (older files untouched)."""
    with StagedFiles(hint=hint) as staged:
        for path, data in files:
            staged.add(path, data)
        return staged.commit()


def write_in(folder: str, name: str, data: bytes, hint: str = "") -> None:
    """`atomic_write(folder/name, data)` for hot loops: str paths, no mkdir, no fsync.

    The temporary is `.<name>.<pid>.tmp` (one writer per file and process, as a render's cells are; a name left
    by a killed run is simply overwritten). Same mode and cleanup as `atomic_write`.
    Raises:
        OutputError "cannot write folder/name: CAUSE[; hint]"; no temporary is left.
    """
    path = f"{folder}{os.sep}{name}"
    tmp = f"{folder}{os.sep}.{name}.{os.getpid()}{TMP_SUFFIX}"
    try:
        fd = os.open(tmp, _NEW | os.O_TRUNC, _FILE_CREATE)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise output_error(path, err, hint) from None


# -- files an encoder writes -------------------------------------------------------------------------------


class PendingFile:
    """A hidden temporary next to `path`, with the same suffix, that an encoder writes and `commit` verifies and
    renames into place (`abort` discards it). Use it where the encoder outlives one call (a live Rerun log);
    otherwise `replace_verified`.

    Args:
        suffix: the temporary's suffix when `path` has none (encoders pick the format from it), e.g. ".mp4".
    Attributes:
        path: the final file. tmp: the temporary to give the encoder (`.<stem>.<token>.tmp<suffix>`; not created).
    """

    def __init__(self, path: str | os.PathLike, verify: Callable[[Path], None] | None = None, *,
                 suffix: str = "", hint: str = "") -> None:
        self.path = Path(path)
        self.verify = verify
        self.hint = hint
        make_folder(self.path.parent, hint)
        self.tmp = self.path.with_name(f".{self.path.stem}.{_token()}{TMP_SUFFIX}{self.path.suffix or suffix}")

    def commit(self) -> Path:
        """Verify the temporary, give it the umask's mode and rename it onto `path`.

        Raises:
            OutputError (one line) when it does not read back or cannot be moved; the temporary is removed and an
            older `path` is untouched.
        """
        if self.verify is not None:
            try:
                self.verify(self.tmp)
            except Exception as err:  # noqa: BLE001  (a reader choking on a broken file raises any type)
                raise self.failure(err, reading=True) from None
        try:
            os.chmod(self.tmp, file_mode())
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise self.failure(err) from None
        return self.path

    def abort(self) -> None:
        """Remove the temporary (an older `path` is untouched)."""
        _discard(self.tmp)

    def failure(self, err: BaseException, *, reading: bool = False) -> OutputError:
        """The one-line OutputError for `err`, raised while producing (or, `reading`, verifying) the temporary;
        removes the temporary. On a (nearly) full file system it is a full disk, whatever the encoder said."""
        if _nearly_full(self.path.parent):  # checked while the temporary still holds its space
            out = output_error(self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.hint)
        elif (denied := _not_writable(self.path.parent)) is not None:  # ffmpeg says "Broken pipe", Rerun worse
            out = output_error(self.path, OSError(denied, os.strerror(denied)), self.hint)
        elif reading:
            why = "the encoder wrote no file" if isinstance(err, FileNotFoundError) else _first_line(err)
            kept = "; the old file is kept" if self.path.exists() else ""
            out = _cannot(self.path, f"the written file does not read back ({why}){kept}", self.hint)
        elif isinstance(err, OSError):
            out = output_error(self.path, err, self.hint)
        else:
            out = _cannot(self.path, _first_line(err), self.hint)
        self.abort()
        return out


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def replace_verified(path: str | os.PathLike, produce: Callable[[Path], None], verify: Callable[[Path], None], *,
                     suffix: str = "", hint: str = "") -> Path:
    """Replace `path` with what an encoder writes, only once it reads back.

    Args:
        produce: writes the file at the path it is given (a hidden temporary in the same folder, with `path`'s
            suffix so encoders pick the format from it).
        verify: opens that file and raises (any exception; its first line becomes the cause) if it is broken,
            e.g. `check_mp4(tmp, frames=n)`.
        suffix: the temporary's suffix when `path` has none, e.g. ".mp4".
    Returns:
        `path`, with mode 0o666 & ~umask.
    Raises:
        OutputError (one line) when producing fails with an OS error or on a full disk, or the file does not
        verify; a Pi0vizError from `produce` passes through; anything else (a bug) keeps its traceback. In every
        case the temporary is removed and an older `path` stays byte-identical.
    """
    pending = PendingFile(path, verify, suffix=suffix, hint=hint)
    try:
        produce(pending.tmp)
    except Pi0vizError:
        pending.abort()
        raise
    except OSError as err:
        raise pending.failure(err) from None
    except BaseException as err:
        if isinstance(err, Exception) and _nearly_full(pending.path.parent):
            raise pending.failure(err) from None
        pending.abort()
        raise
    return pending.commit()


# -- folders ----------------------------------------------------------------------------------------------


class StagedFolder:
    """A folder output built under a hidden name next to `path` (`.<name>.<token>.tmp`) and swapped in whole by
    `commit`; `abort` removes it. An older `path` (and everything in it) is untouched until the swap, and put
    back if the swap fails.

    Attributes:
        tmp: the staging folder's path; `folder` creates it on first use (mode 0o777 & ~umask), or a producer that
            insists on making it itself (orbax, copytree) may create it there.
    """

    def __init__(self, path: str | os.PathLike, *, hint: str = "") -> None:
        self.path = Path(path)
        self.hint = hint
        self.tmp = self.path.with_name(f".{self.path.name}.{_token()}{TMP_SUFFIX}")
        self._made = False

    @property
    def started(self) -> bool:
        """Whether the staging folder was created (by `folder` or a producer)."""
        return self._made or os.path.isdir(self.tmp)

    @property
    def folder(self) -> Path:
        """The staging folder, created on first use."""
        if not self._made:
            make_folder(self.path.parent, self.hint)
            try:
                os.mkdir(self.tmp, _FOLDER_CREATE)
            except OSError as err:
                raise output_error(self.path, err, self.hint) from None
            self._made = True
        return self.tmp

    def write(self, name: str, data: bytes | str) -> Path:
        """Write file `name` (a plain name) inside the staging folder; the folder is the atomic unit, so no
        temporary per file. On failure the staging folder is removed and OutputError names `path/name`."""
        target = self.folder / name
        try:
            fd = os.open(target, _NEW | os.O_TRUNC, _FILE_CREATE)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as err:
            self.abort()
            raise output_error(self.path / name, err, self.hint) from None
        return target

    def commit(self) -> Path:
        """Swap the staging folder in as `path` (an older `path` is moved aside, then removed)."""
        old = None
        try:
            if not os.path.isdir(self.tmp):
                raise FileNotFoundError(errno.ENOENT, "nothing was staged", str(self.tmp))
            if os.path.lexists(self.path):
                old = self.path.with_name(f".{self.path.name}.{_token()}.old{TMP_SUFFIX}")
                os.replace(self.path, old)
            try:
                os.replace(self.tmp, self.path)
            except OSError:
                if old is not None:  # put the old one back
                    os.replace(old, self.path)
                    old = None
                raise
        except OSError as err:
            self.abort()
            raise output_error(self.path, err, self.hint) from None
        self._made = False
        if old is not None:
            _discard(old)
        return self.path

    def abort(self) -> None:
        """Remove the staging folder (an older `path` is untouched)."""
        _discard(self.tmp)
        self._made = False


def replace_folder(path: str | os.PathLike, produce: Callable[[Path], None], *, create: bool = True,
                   hint: str = "") -> Path:
    """Replace folder `path` with what `produce` writes into the folder it is given (a hidden sibling), whole.

    Args:
        create: hand `produce` an existing, empty folder; False: a path it must create (orbax, copytree).
    Raises:
        OutputError naming `path` and the cause; the staging folder is removed and an older `path` untouched.
    """
    staged = StagedFolder(path, hint=hint)
    try:
        if not create:
            make_folder(staged.path.parent, hint)
        produce(staged.folder if create else staged.tmp)
    except OSError as err:
        staged.abort()
        raise output_error(path, err, hint) from None
    except BaseException:
        staged.abort()
        raise
    return staged.commit()


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
