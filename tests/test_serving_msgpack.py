"""pi0viz.serving.msgpack_numpy: openpi's wire format, every dtype, and refusal of unsafe payloads."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pi0viz.serving import msgpack_numpy
from pi0viz.serving.msgpack_numpy import MsgpackNumpyError

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "<U7", "|S5", ">i4", ">f8"]


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "U":
        flat = np.array([f"tok{i}é"[:7] for i in range(n)], dtype=dtype)
    elif kind == "S":
        flat = np.array([f"b{i}".encode() for i in range(n)], dtype=dtype)
    elif kind == "b":
        flat = rng.random(n) > 0.5
    elif kind in "iu":
        info = np.iinfo(dtype)
        extremes = np.array([info.min, info.max], dtype=dtype)  # exact, even for uint64
        flat = np.concatenate([extremes, rng.integers(0, 100, max(n - 2, 0)).astype(dtype)])[:n]
    else:
        flat = (rng.standard_normal(n) * 1000).astype(dtype)
    return flat.reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4, 2)])
def test_array_round_trip_is_exact(dtype: str, shape: tuple[int, ...]) -> None:
    a = _sample(dtype, shape)
    b = msgpack_numpy.unpackb(msgpack_numpy.packb({"x": a}))["x"]
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(b, a)


def test_wire_layout_is_openpis() -> None:
    """The map an array becomes, read with plain msgpack: openpi-client decodes exactly this."""
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    raw = msgpack.unpackb(msgpack_numpy.packb(a), raw=False)
    assert raw == {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    s = msgpack.unpackb(msgpack_numpy.packb(np.float32(1.5)), raw=False)
    assert s == {b"__npgeneric__": True, b"data": 1.5, b"dtype": "<f4"}


def test_non_contiguous_arrays_are_sent_in_c_order() -> None:
    a = np.arange(12, dtype=np.int32).reshape(3, 4).T[::2]
    np.testing.assert_array_equal(msgpack_numpy.unpackb(msgpack_numpy.packb(a)), a)


@pytest.mark.parametrize("value", [np.float16(0.25), np.int64(-7), np.uint8(200), np.bool_(True), np.float32(3.5)])
def test_numpy_scalars_round_trip(value: np.generic) -> None:
    back = msgpack_numpy.unpackb(msgpack_numpy.packb(value))
    assert type(back) is type(value) and back == value


def test_float64_scalar_travels_as_a_plain_float() -> None:
    # np.float64 subclasses float, so msgpack packs it natively (openpi behaves the same).
    assert msgpack_numpy.unpackb(msgpack_numpy.packb(np.float64(1e300))) == 1e300


def test_nested_structures() -> None:
    obs = {"prompt": "pick up the bowl", "observation/state": np.zeros(8), "timing": {"infer_ms": 1.5},
           "list": [1, np.int32(2), np.ones(2, np.uint8)], "flag": True}
    back = msgpack_numpy.unpackb(msgpack_numpy.packb(obs))
    assert back["prompt"] == obs["prompt"] and back["timing"] == {"infer_ms": 1.5} and back["flag"] is True
    np.testing.assert_array_equal(back["list"][2], obs["list"][2])


@pytest.mark.parametrize("bad", [np.array([{"a": 1}], dtype=object), np.zeros(2, dtype=[("a", "<i4")]),
                                 np.zeros(2, dtype=np.complex64), np.zeros(3, dtype="V4")])
def test_pack_refuses_object_void_complex(bad: np.ndarray) -> None:
    with pytest.raises(MsgpackNumpyError, match="not supported"):
        msgpack_numpy.packb({"x": bad})


def test_pack_refuses_unknown_objects() -> None:
    with pytest.raises(MsgpackNumpyError, match="cannot pack"):
        msgpack_numpy.packb({"x": object()})


def _forged(dtype: str, data: bytes, shape: list[int]) -> bytes:
    return msgpack.packb({"x": {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}},
                         use_bin_type=True)


@pytest.mark.parametrize("dtype", ["|O", "O", "|V8", "[('a', '<i4')]", "<c8", "i4,f8"])
def test_unpack_refuses_object_and_void_dtypes(dtype: str) -> None:
    # An object array rebuilt from attacker bytes would dereference arbitrary pointers.
    with pytest.raises(MsgpackNumpyError):
        msgpack_numpy.unpackb(_forged(dtype, b"\x00" * 16, [2]))


@pytest.mark.parametrize("data, shape", [(b"\x00" * 7, [2]), (b"\x00" * 8, [3]), (b"\x00" * 8, [-1]),
                                         (b"\x00" * 8, "2")])
def test_unpack_refuses_size_and_shape_mismatch(data: bytes, shape) -> None:
    with pytest.raises(MsgpackNumpyError):
        msgpack_numpy.unpackb(_forged("<i4", data, shape))


@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", b"not msgpack at all \xff\xff", "a str"])
def test_unpack_refuses_garbage(payload) -> None:
    with pytest.raises(MsgpackNumpyError):
        msgpack_numpy.unpackb(payload)


def test_unpack_never_unpickles() -> None:
    """A pickle payload smuggled as bytes stays bytes."""
    import pickle

    blob = pickle.dumps({"boom": 1})
    back = msgpack_numpy.unpackb(msgpack_numpy.packb({"x": blob}))
    assert back["x"] == blob
