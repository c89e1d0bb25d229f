"""The one guarded reader of the JSON files pi0viz reads back (episode metrics, a sweep's results.json, knockout
results): a size cap read as bytes (a file that grows while read is still capped), NaN and Infinity refused (pi0viz
writes missing numbers as null), and an optional `format` check. Every failure is one `JsonFileError` line.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pi0viz.errors import JsonFileError


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (pi0viz writes missing numbers as null)")


def read_json(path: str | os.PathLike, *, max_bytes: int, fmt: str | None = None, allow_nan: bool = False) -> Any:
    """The parsed JSON of `path` (a dict when `fmt` is given).

    Args:
        path: the file.
        max_bytes: the largest file read, in bytes; a larger one is refused unread.
        fmt: when given, the file must be a JSON object whose "format" field is exactly this string.
        allow_nan: accept NaN / Infinity as floats (only for files whose writer may emit them, e.g. results.json).

    Raises:
        JsonFileError: one line naming the file and what was wrong (unreadable, too large, not UTF-8 JSON, NaN or
            Infinity, too deeply nested, not of format `fmt`); its `reason` is the line without the path.
    """
    try:
        with open(path, "rb") as f:  # the size is checked before reading: a huge file is not read at all
            raw = None if os.fstat(f.fileno()).st_size > max_bytes else f.read(max_bytes + 1)
        too_big = raw is None or len(raw) > max_bytes  # len: the file grew while it was read
        data = None if too_big else json.loads(raw.decode("utf-8"),
                                               **({} if allow_nan else {"parse_constant": _refuse_constant}))
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = getattr(err, "strerror", None) or " ".join(str(err).split())[:160] or type(err).__name__
        raise JsonFileError(path, f"not readable JSON ({reason})") from None
    if too_big:
        cap = f"{max_bytes >> 20} MiB" if max_bytes >= 1 << 20 else f"{max_bytes} bytes"
        raise JsonFileError(path, f"larger than {cap}")
    if fmt is not None and not (isinstance(data, dict) and data.get("format") == fmt):
        found = f"format {data.get('format')!r:.60}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise JsonFileError(path, f"not a {fmt} file ({found})")
    return data
