"""msgpack with numpy arrays: the wire format of openpi's policy server and `openpi-client`.

An ndarray travels as the map {b"__ndarray__": True, b"data": raw C-order bytes, b"dtype": dtype.str,
b"shape": shape}; a numpy scalar as {b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}. Those are
the exact bytes openpi-client 0.1.2 writes and reads, so either side can be openpi's.

Untrusted data stays data: nothing here unpickles, and object, void (structured) and complex dtypes are
refused in both directions (an object array rebuilt from a byte buffer would hold raw pointers). bfloat16
(ml_dtypes) has kind "V" and is refused too: cast to float16/float32 before sending.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from pi0viz.errors import ProtocolError as MsgpackNumpyError

# openpi refuses these kinds when packing; we refuse them when unpacking as well.
_REFUSED_KINDS = frozenset("VOc")



def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind in _REFUSED_KINDS:
        raise MsgpackNumpyError(
            f"{where}: dtype {dtype} (kind {dtype.kind!r}) is not supported; send numeric, bool or str arrays "
            "(bfloat16: cast to float16 or float32 first)"
        )


def pack_array(obj: Any) -> Any:
    """msgpack `default` hook: encode ndarrays and numpy scalars, refuse anything else msgpack can't pack."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "pack")
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype, "pack")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise MsgpackNumpyError(
        f"cannot pack {type(obj).__module__}.{type(obj).__name__}: convert it to a numpy array, number, str, "
        "bytes, list or dict first (jax arrays: np.asarray)"
    )


def unpack_array(obj: dict) -> Any:
    """msgpack `object_hook`: rebuild ndarrays and numpy scalars, validating dtype and size."""
    if b"__ndarray__" in obj:
        dtype = _parse_dtype(obj.get(b"dtype"))
        data, shape = obj.get(b"data"), obj.get(b"shape")
        if not isinstance(data, (bytes, bytearray)):
            raise MsgpackNumpyError(f"ndarray data must be bytes, got {type(data).__name__}")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise MsgpackNumpyError(f"ndarray shape must be a list of non-negative ints, got {shape!r}")
        expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd shapes
        if len(data) != expected:
            raise MsgpackNumpyError(
                f"ndarray of shape {list(shape)} and dtype {dtype} needs {expected} bytes, got {len(data)}"
            )
        # A read-only view on the received bytes (no copy), as openpi-client returns.
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if b"__npgeneric__" in obj:
        dtype = _parse_dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as err:
            raise MsgpackNumpyError(f"numpy scalar of dtype {dtype}: {err}") from None
    return obj


def _parse_dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, str):
        raise MsgpackNumpyError(f"dtype must be a string such as '<f4', got {type(spec).__name__}")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as err:
        raise MsgpackNumpyError(f"unknown dtype {spec!r}: {err}") from None
    _check_dtype(dtype, "unpack")
    return dtype


def packb(obj: Any) -> bytes:
    """Serialize `obj` (dicts, lists, str, numbers, ndarrays, numpy scalars) to msgpack-numpy bytes."""
    try:
        return msgpack.packb(obj, default=pack_array, use_bin_type=True)
    except MsgpackNumpyError:
        raise
    except (TypeError, ValueError, OverflowError) as err:
        raise MsgpackNumpyError(f"cannot pack: {err}") from None


def unpackb(data: bytes) -> Any:
    """Deserialize msgpack-numpy bytes; raises MsgpackNumpyError on anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MsgpackNumpyError(f"expected bytes, got {type(data).__name__}")
    try:
        # raw=False: str stays str; openpi's marker keys (b"__ndarray__") arrive as bytes, map keys may be either.
        return msgpack.unpackb(data, object_hook=unpack_array, raw=False)
    except MsgpackNumpyError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as err:
        reason = "nested too deeply" if isinstance(err, msgpack.StackError) else (str(err) or type(err).__name__)
        raise MsgpackNumpyError(f"not valid msgpack: {reason}") from None


class Packer:
    """Same interface as `openpi_client.msgpack_numpy.Packer().pack`, for readers coming from openpi."""

    def pack(self, obj: Any) -> bytes:
        return packb(obj)
