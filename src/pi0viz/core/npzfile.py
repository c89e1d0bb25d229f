"""Reading an untrusted .npz: every array header is checked before any array is allocated.

`np.load` allocates what an array's .npy header claims before reading a byte of data, so a 1 KB file whose
header says [10^6, 10^6, ...] float32 asks for exabytes. `NpzReader` reads the headers of all members
first (from the zip's central directory and the first bytes of each member), refuses any whose byte count
disagrees with the member's size in the archive, or whose member claims more than deflate can expand to,
and only then loads the arrays the caller asks for. Object arrays are refused (no pickle, ever).
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pi0viz.errors import BundleError

# deflate cannot expand more than ~1032:1; anything claiming more than this is lying about its size.
MAX_DEFLATE_RATIO = 1100
_SLACK = 1 << 16  # small members: zip and npy headers dominate, allow generous room
# what reading a damaged member can raise: zlib for a broken deflate stream, NotImplementedError for a compression
# zipfile lacks, RuntimeError for an encrypted member; none of them is a bug in pi0viz
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def _reason(err: BaseException) -> str:
    """numpy's and zipfile's complaint as one short line; numpy's advice to unpickle (allow_pickle) never reaches
    the user: pi0viz never unpickles, so that advice would only invite running untrusted code."""
    text = " ".join(str(err).split())[:200] or type(err).__name__
    if "pickle" in text.lower():
        return "it holds object data, which would need pickle; pi0viz never unpickles"
    return text


@dataclasses.dataclass(frozen=True)
class ArrayHeader:
    """What a member's .npy header claims: shape, dtype, and where the data starts."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow on absurd shapes


class NpzReader:
    """Headers first, data on request. Use as a context manager; raises BundleError naming the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as err:
            raise BundleError(f"{self.path}: not an .npz archive (a zip of .npy arrays): {_reason(err)}") from None
        except OSError as err:
            raise BundleError(f"{self.path}: cannot read: {err.strerror or err}") from None
        try:
            self.headers = self._read_headers()
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _fail(self, what: str) -> BundleError:
        return BundleError(f"{self.path}: {what}")

    def _read_headers(self) -> dict[str, ArrayHeader]:
        headers: dict[str, ArrayHeader] = {}
        try:
            archive_size = self.path.stat().st_size
        except OSError as err:
            raise self._fail(f"cannot read: {err.strerror or err}") from None
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise self._fail(f"member {info.filename!r} is not a .npy array; an .npz holds only arrays")
            name = info.filename[:-4]
            if name in headers:
                raise self._fail(f"array {name!r} appears twice in the archive")
            if info.header_offset + info.compress_size > archive_size:
                # the central directory claims more bytes than the file has: truncated, or a forged size
                raise self._fail(f"array {name!r}: member claims {info.compress_size} bytes at offset "
                                 f"{info.header_offset}, past the end of the {archive_size}-byte file (truncated?)")
            if info.compress_type == zipfile.ZIP_STORED:
                if info.file_size != info.compress_size:
                    raise self._fail(f"array {name!r}: stored member claims {info.file_size} bytes but holds "
                                     f"{info.compress_size}")
            elif info.file_size > MAX_DEFLATE_RATIO * info.compress_size + _SLACK:
                raise self._fail(f"array {name!r}: member claims {info.file_size} bytes from {info.compress_size} "
                                 "compressed bytes, more than deflate can produce (a forged size)")
            try:
                with self._zip.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    header_len = f.tell()
            except _READ_ERRORS as err:
                raise self._fail(f"array {name!r}: unreadable .npy header ({_reason(err)})") from None
            if dtype.hasobject or dtype.kind == "V":
                raise self._fail(f"array {name!r} has dtype {dtype}: object and structured arrays are refused "
                                 "(they would need pickle); a bundle holds only numbers, bools and strings")
            header = ArrayHeader(name, tuple(int(s) for s in shape), dtype, bool(fortran))
            data_len = info.file_size - header_len
            if header.nbytes != data_len:
                raise self._fail(f"array {name!r}: header claims shape {list(header.shape)} {dtype} = "
                                 f"{header.nbytes} bytes, but the member holds {data_len} bytes of data")
            headers[name] = header
        return headers

    def load(self, name: str) -> np.ndarray:
        """The array `name` (its header was already checked against the member's size)."""
        if name not in self.headers:
            raise self._fail(f"has no array {name!r}")
        try:
            with self._zip.open(name + ".npy") as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as err:
            raise self._fail(f"array {name!r} is damaged ({_reason(err)})") from None


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz through the guarded reader (headers checked first, no pickle); BundleError if not."""
    with NpzReader(path) as npz:
        return {name: npz.load(name) for name in npz.headers}
