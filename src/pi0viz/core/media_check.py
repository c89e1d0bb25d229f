"""Reading back what an encoder wrote, cheaply: the container's index, never the pixels.

`core.writes.replace_verified` / `PendingFile` rename an encoder's temporary into place only once one of these
accepts it, so a file cut short by a full disk, or an encoder that never finished, never replaces a good one.
"""

from __future__ import annotations

import os
import struct


def check_mp4(path: str | os.PathLike, frames: int | None = None) -> int:
    """Check that `path` is a complete MP4 and return its frame count (samples of the first video track).

    Walks the top-level boxes (they must tile the file exactly: a file cut short by a full disk fails) and reads
    the sample count from moov/trak/mdia/minf/stbl/stsz; reads the index only, never the media data.
    Raises:
        ValueError with a one-line reason: not an MP4, cut short, no moov (the encoder never finished), no video
        track, or `frames` given and the count differs.
    """
    size = os.path.getsize(path)
    moov = None
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                raise ValueError(f"cut short in a box header at byte {pos} of {size}")
            n, kind = struct.unpack_from(">I4s", head)
            hdr = 8
            if n == 1 and len(head) == 16:
                n, hdr = struct.unpack_from(">Q", head, 8)[0], 16
            elif n == 0:
                n = size - pos
            if pos == 0 and kind != b"ftyp":
                raise ValueError("not an MP4 file (it does not start with an ftyp box)")
            if n < hdr or pos + n > size:
                raise ValueError(f"cut short: box '{kind.decode('latin-1')}' at byte {pos} claims {n} bytes, "
                                 f"the file has {size}")
            if kind == b"moov":
                f.seek(pos + hdr)
                moov = f.read(n - hdr)
            pos += n
    if size == 0:
        raise ValueError("the file is empty")
    if moov is None:
        raise ValueError("no moov box: the encoder did not finish the file")
    count = _video_samples(moov)
    if count is None:
        raise ValueError("no video track")
    if frames is not None and count != frames:
        raise ValueError(f"{count} frames in the file, {frames} were written")
    return count


def _boxes(buf: bytes, start: int, end: int):
    """(type, payload start, end) of the boxes in buf[start:end]."""
    pos = start
    while pos + 8 <= end:
        n, kind = struct.unpack_from(">I4s", buf, pos)
        hdr = 8
        if n == 1:
            n, hdr = struct.unpack_from(">Q", buf, pos + 8)[0], 16
        elif n == 0:
            n = end - pos
        if n < hdr or pos + n > end:
            raise ValueError(f"a broken '{kind.decode('latin-1')}' box in the moov index")
        yield kind, pos + hdr, pos + n
        pos += n


def _child(buf: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in _boxes(buf, start, end) if k == kind), None)


def _video_samples(moov: bytes) -> int | None:
    for kind, s, e in _boxes(moov, 0, len(moov)):
        if kind != b"trak" or (mdia := _child(moov, s, e, b"mdia")) is None:
            continue
        hdlr = _child(moov, *mdia, b"hdlr")
        if hdlr is None or moov[hdlr[0] + 8:hdlr[0] + 12] != b"vide":  # version/flags, pre_defined, handler type
            continue
        stbl = None
        if (minf := _child(moov, *mdia, b"minf")) is not None:
            stbl = _child(moov, *minf, b"stbl")
        if stbl is None:
            raise ValueError("the video track has no sample table")
        for table in (b"stsz", b"stz2"):  # both: version/flags, 4 bytes, then the sample count
            if (box := _child(moov, *stbl, table)) is not None and box[1] - box[0] >= 12:
                return struct.unpack_from(">I", moov, box[0] + 8)[0]
        raise ValueError("the video track has no sample sizes")
    return None


RRD_MAGIC = b"RRF2"


def check_rrd(path: str | os.PathLike) -> int:
    """Check that `path` is a complete Rerun recording and return its message count.

    An .rrd stream is a 12-byte header (b"RRF2", the SDK version, the encoding options), then messages, each a
    little-endian (kind u64, length u64) header and its payload, ending with an end-of-stream header (0, 0);
    streams may follow one another. This walks the headers only (a seek per message, no decoding), so a file cut
    short by a full disk or a writer that never finished fails.
    Raises:
        ValueError with a one-line reason.
    """
    size = os.path.getsize(path)
    messages = 0
    with open(path, "rb") as f:
        pos = 0
        if size == 0:
            raise ValueError("the file is empty")
        while pos < size:  # one stream per turn
            f.seek(pos)
            if f.read(4) != RRD_MAGIC:
                raise ValueError(f"not a Rerun recording (no {RRD_MAGIC!r} header at byte {pos})")
            pos += 12
            while True:
                f.seek(pos)
                head = f.read(16)
                if len(head) < 16:
                    raise ValueError(f"cut short after {messages} messages (no end-of-stream marker)")
                kind, n = struct.unpack("<QQ", head)
                pos += 16
                if kind == 0 and n == 0:
                    break
                if kind > 0xFFFF or pos + n > size:
                    raise ValueError(f"cut short in message {messages} at byte {pos - 16} of {size}")
                pos += n
                messages += 1
    return messages
