"""The capture bundle: everything needed to render one pi0 inference call, as plain arrays.

Capture (inside the model, on a GPU server, in a LIBERO loop) and rendering (later, on a laptop, in
parallel) meet here. A bundle is a flat mapping of names to numpy arrays, so the same keys travel as an
`.npz` file (`np.load(path, allow_pickle=False)`) or inside an openpi msgpack-numpy response. The format
is documented in docs/capture-bundle.md; `FORMAT` names its version.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np

from pi0viz.core.layout import AttentionLayout
from pi0viz.core.npzfile import NpzReader
from pi0viz.core.selection import folder_index
from pi0viz.core.writes import atomic_write
from pi0viz.errors import BundleError

FORMAT = "pi0viz.capture/1"
SUPPORTED_FORMATS = (FORMAT,)
BUNDLE_PREFIX = "attention_bundle/"  # key prefix when a bundle rides inside a policy response
REQUIRED_KEYS = ("attention", "camera_names", "images", "image_masks", "token_ids", "token_pieces", "token_mask",
                 "num_state_tokens", "num_action_tokens", "diffusion_times")
INT32_MAX = 2**31 - 1  # indices are stored as int32



@dataclasses.dataclass
class CaptureBundle:
    """One inference call's suffix attention plus the inputs needed to draw it.

    Shapes: D denoising steps, L layers, B batch, K kv heads, G query heads per kv head, Q suffix
    queries, S keys, C cameras, h x w image pixels, T prompt slots.

    Attributes:
        attention: [D, L, B, K, G, Q, S] float16/float32. Post-softmax probabilities (`attention_kind`
            "probs") or pre-softmax scaled scores ("logits"). Query head n = k * G + g.
        camera_names: [C] camera slots in token order.
        images: [B, C, h, w, 3] uint8, the images the model saw (224 x 224 for pi0).
        image_masks: [B, C] bool; False = padded camera slot (its keys are masked; nothing is drawn).
        token_ids: [B, T] int32 prompt token ids.
        token_pieces: [B, T] str, decoded pieces for display ("" for pads).
        token_mask: [B, T] bool; False = padding.
        num_state_tokens, num_action_tokens: suffix layout (pi0: 1, 50; pi0.5: 0, 10).
        diffusion_times: [D] float32, flow-matching time t of each stored step (1.0 = pure noise).
        patch_grid: (rows, cols) image tokens per camera, raster order.
        attention_kind: "probs" or "logits".
        attention_heads: "all" (G query heads kept) or "max" (heads fused by max on device; K = G = 1).
        attention_queries: "suffix" (Q = state + actions) or "actions" (Q = actions only).
        attention_keys: "all" (S = prefix + suffix) or "prefix" (S = cameras + prompt only).
        step_indices: [D] int32, which denoising steps of the call are stored (default all, 0..D-1).
        layer_indices: [L] int32, which layers are stored (default all, 0..L-1).
        prompt: [B] str, the raw prompt.
        inference_step: index of this call in an episode, or None.
        actions: float32[B, A, action_dims] sampled actions, or None.
    """

    attention: np.ndarray
    camera_names: list[str]
    images: np.ndarray
    image_masks: np.ndarray
    token_ids: np.ndarray
    token_pieces: np.ndarray
    token_mask: np.ndarray
    num_state_tokens: int
    num_action_tokens: int
    diffusion_times: np.ndarray
    patch_grid: tuple[int, int] = (16, 16)
    attention_kind: Literal["probs", "logits"] = "probs"
    attention_heads: Literal["all", "max"] = "all"
    attention_queries: Literal["suffix", "actions"] = "suffix"
    attention_keys: Literal["all", "prefix"] = "all"
    step_indices: np.ndarray | None = None
    layer_indices: np.ndarray | None = None
    prompt: np.ndarray | None = None
    inference_step: int | None = None
    actions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.camera_names = [str(n) for n in np.asarray(self.camera_names).reshape(-1)]
        self.patch_grid = (int(self.patch_grid[0]), int(self.patch_grid[1]))
        self.num_state_tokens = int(self.num_state_tokens)
        self.num_action_tokens = int(self.num_action_tokens)
        if self.step_indices is None:
            self.step_indices = np.arange(self.attention.shape[0] if self.attention.ndim else 0, dtype=np.int32)
        if self.layer_indices is None:
            self.layer_indices = np.arange(self.attention.shape[1] if self.attention.ndim > 1 else 0, dtype=np.int32)
        self.validate()

    # -- derived -----------------------------------------------------------------------------------

    @property
    def layout(self) -> AttentionLayout:
        return AttentionLayout(
            camera_names=tuple(self.camera_names),
            patch_grid=self.patch_grid,
            num_text_tokens=int(self.token_ids.shape[1]),
            num_state_tokens=self.num_state_tokens,
            num_action_tokens=self.num_action_tokens,
            keys=self.attention_keys,
            queries=self.attention_queries,
        )

    def _layout_or_error(self) -> AttentionLayout:
        try:
            return self.layout
        except (ValueError, IndexError) as err:
            raise BundleError(f"inconsistent layout: {err}") from None

    @property
    def batch_size(self) -> int:
        return int(self.attention.shape[2])

    # -- validation ----------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every shape, dtype and value against the layout; raise BundleError saying what was expected."""
        att = self.attention
        if not isinstance(att, np.ndarray) or att.ndim != 7:
            raise BundleError(
                "attention must be a 7-d array [D steps, L layers, B batch, K kv heads, G heads, Q queries, S keys], "
                f"got shape {getattr(att, 'shape', type(att))}"
            )
        if att.dtype.kind != "f":
            raise BundleError(f"attention must be float16/float32 (bfloat16: convert to float32), got {att.dtype}")
        if self.attention_kind not in ("probs", "logits"):
            raise BundleError(f"attention_kind must be 'probs' or 'logits', got {self.attention_kind!r}")
        if self.attention_heads not in ("all", "max"):
            raise BundleError(f"attention_heads must be 'all' or 'max', got {self.attention_heads!r}")
        if self.attention_heads == "max" and att.shape[3:5] != (1, 1):
            raise BundleError(f"attention_heads='max' means K = G = 1, got K, G = {att.shape[3:5]}")
        D, L, B, _, _, Q, S = att.shape
        if not self.camera_names:
            raise BundleError("camera_names is empty: expected at least one camera slot")
        _check_attention_shape(att.shape, self._layout_or_error(), self.num_state_tokens, self.num_action_tokens)
        C = len(self.camera_names)
        _expect(self.images, "images", (B, C, None, None, 3), np.uint8)
        _expect(self.image_masks, "image_masks", (B, C), np.bool_)
        _expect(self.token_ids, "token_ids", (B, None), None, kind="iu")
        T = self.token_ids.shape[1]
        _expect(self.token_mask, "token_mask", (B, T), np.bool_)
        _expect(self.token_pieces, "token_pieces", (B, T), None, kind="U")
        _expect(self.diffusion_times, "diffusion_times", (D,), None, kind="f")
        _expect(self.step_indices, "step_indices", (D,), None, kind="iu")
        _expect(self.layer_indices, "layer_indices", (L,), None, kind="iu")
        if self.prompt is not None:
            _expect(self.prompt, "prompt", (B,), None, kind="U")
        for name in ("step_indices", "layer_indices"):
            _check_indices(getattr(self, name), name)
        if self.inference_step is not None:  # names the call's folder: 1.5 must not become 1 (core.selection)
            self.inference_step = folder_index(self.inference_step, "inference_step", BundleError)
        if self.actions is not None and (self.actions.ndim != 3 or self.actions.shape[0] != B):
            raise BundleError(f"actions must be [B={B}, horizon, dim], got shape {self.actions.shape}")
        if np.isnan(att).any():
            raise BundleError("attention contains NaN: the capture is broken (expected finite probabilities or scores)")
        if np.isposinf(att).any() or (self.attention_kind == "probs" and np.isinf(att).any()):
            raise BundleError("attention contains inf: expected finite values (probabilities in [0, 1])")

    # -- (de)serialization -----------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The bundle as a flat {name: ndarray} mapping (npz keys = msgpack keys; no objects)."""
        out: dict[str, np.ndarray] = {
            "format": np.asarray(FORMAT),
            "attention": self.attention,
            "attention_kind": np.asarray(self.attention_kind),
            "attention_heads": np.asarray(self.attention_heads),
            "attention_queries": np.asarray(self.attention_queries),
            "attention_keys": np.asarray(self.attention_keys),
            **input_arrays(self),
            "num_state_tokens": np.asarray(self.num_state_tokens, dtype=np.int32),
            "num_action_tokens": np.asarray(self.num_action_tokens, dtype=np.int32),
            "diffusion_times": self.diffusion_times.astype(np.float32),
            **index_arrays(self),
            **optional_arrays(self),
        }
        if self.actions is not None:
            out["actions"] = self.actions.astype(np.float32)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> "CaptureBundle":
        """Build (and validate) a bundle from a flat mapping as written by `to_arrays`."""
        fmt = _scalar(arrays, "format", str, None)
        if fmt not in SUPPORTED_FORMATS:
            raise BundleError(f"unknown bundle format {fmt!r}; this pi0viz reads {list(SUPPORTED_FORMATS)}"
                              f"{_decoding_hint(fmt)}")
        check_required(arrays, REQUIRED_KEYS, FORMAT)
        return cls(
            **common_fields(arrays),
            num_state_tokens=_scalar(arrays, "num_state_tokens", int, None),
            num_action_tokens=_scalar(arrays, "num_action_tokens", int, None),
            diffusion_times=np.asarray(arrays["diffusion_times"]),
            attention_kind=_scalar(arrays, "attention_kind", str, "probs"),
            attention_queries=_scalar(arrays, "attention_queries", str, "suffix"),
            actions=optional_array(arrays, "actions"),
        )


# -- the (de)serialization both bundle kinds share (capture/1 here, capture/2 in core.decode_bundle) ------------
# The members below mean the same in both formats; each format adds its own between them (to_arrays keeps the
# member order of the files pi0viz has always written).


def input_arrays(bundle: Any) -> dict[str, np.ndarray]:
    """What the model saw, as npz members: camera_names, images, image_masks, patch_grid, the prompt's token_ids
    (int32), token_pieces and token_mask. `bundle`: a CaptureBundle or a DecodeBundle."""
    return {
        "camera_names": np.asarray(bundle.camera_names, dtype=str),
        "images": bundle.images,
        "image_masks": bundle.image_masks,
        "patch_grid": np.asarray(bundle.patch_grid, dtype=np.int32),
        "token_ids": bundle.token_ids.astype(np.int32),
        "token_pieces": bundle.token_pieces,
        "token_mask": bundle.token_mask,
    }


def index_arrays(bundle: Any) -> dict[str, np.ndarray]:
    """The stored steps' and layers' indices as int32[J or D] and int32[L] npz members."""
    return {"step_indices": np.asarray(bundle.step_indices, dtype=np.int32),
            "layer_indices": np.asarray(bundle.layer_indices, dtype=np.int32)}


def optional_arrays(bundle: Any) -> dict[str, np.ndarray]:
    """prompt [B] str and the scalar int32 inference_step, when the bundle has them."""
    out: dict[str, np.ndarray] = {}
    if bundle.prompt is not None:
        out["prompt"] = bundle.prompt
    if bundle.inference_step is not None:
        out["inference_step"] = np.asarray(bundle.inference_step, dtype=np.int32)
    return out


def optional_array(arrays: Mapping[str, Any], key: str) -> np.ndarray | None:
    """arrays[key] as an ndarray, or None when the mapping does not hold it."""
    return None if key not in arrays else np.asarray(arrays[key])


def check_required(arrays: Mapping[str, Any], required: tuple[str, ...], fmt: str) -> None:
    """BundleError (one line) naming the required members the mapping lacks."""
    missing = [k for k in required if k not in arrays]
    if missing:
        raise BundleError(f"bundle is missing required keys {missing} (format {fmt}, see docs/capture-bundle.md)")


def common_fields(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments both bundle classes read alike: attention, the inputs (input_arrays), the head
    and key reductions, the stored indices, prompt and inference_step."""
    return dict(
        attention=np.asarray(arrays["attention"]),
        camera_names=list(np.asarray(arrays["camera_names"]).reshape(-1)),
        images=np.asarray(arrays["images"]),
        image_masks=np.asarray(arrays["image_masks"]),
        token_ids=np.asarray(arrays["token_ids"]),
        token_pieces=np.asarray(arrays["token_pieces"]),
        token_mask=np.asarray(arrays["token_mask"]),
        patch_grid=tuple(np.asarray(arrays.get("patch_grid", (16, 16))).reshape(-1)[:2]),
        attention_heads=_scalar(arrays, "attention_heads", str, "all"),
        attention_keys=_scalar(arrays, "attention_keys", str, "all"),
        step_indices=optional_array(arrays, "step_indices"),
        layer_indices=optional_array(arrays, "layer_indices"),
        prompt=optional_array(arrays, "prompt"),
        inference_step=_scalar(arrays, "inference_step", int, None),
    )


def save_arrays(arrays: Mapping[str, np.ndarray], path: str | os.PathLike, *, compress: bool = False) -> Path:
    """Write a bundle's flat arrays to `path` (.npz) atomically and durably (fsync'ed: one file per call, so the
    flush is cheap): a crash, a power cut or a full disk never leaves a half-written file, and an older file of
    the same name stays whole until the new one is complete.

    Raises:
        OutputError naming the path and the cause (read-only folder, no space or inodes, a path through a file).
    """
    save = np.savez_compressed if compress else np.savez
    return atomic_write(Path(path), lambda f: save(f, **arrays), durable=True)


def read_arrays(path: str | os.PathLike, *, layout_keys: tuple[str, ...] = (),
                check_headers: Callable[[Mapping[str, tuple[int, ...]], Mapping[str, np.ndarray]], None] | None = None
                ) -> dict[str, np.ndarray]:
    """Every member of a bundle .npz, never unpickling anything.

    The small `layout_keys` members (scalars, short strings) are read first; `check_headers(shapes, small)` then
    checks the archive's array shapes (from the .npy headers, no array read) against the layout they describe, so
    a forged header never makes pi0viz allocate. Only then are the other arrays read.

    Raises:
        BundleError naming the file and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no capture bundle at {path} (expected an .npz file written by pi0viz)")
    with NpzReader(path) as npz:
        small = {k: npz.load(k) for k in layout_keys if k in npz.headers and npz.headers[k].nbytes <= _SMALL_BYTES}
        if check_headers is not None:
            try:
                check_headers({k: h.shape for k, h in npz.headers.items()}, small)
            except BundleError as err:
                raise BundleError(f"{path}: {err}") from None
        return {name: small[name] if name in small else npz.load(name) for name in npz.headers}


def save_bundle(bundle: CaptureBundle, path: str | os.PathLike, *, compress: bool = False) -> Path:
    """Write `bundle` to `path` (.npz) atomically and durably (see `save_arrays`).

    Raises:
        OutputError naming the path and the cause (read-only folder, no space or inodes, a path through a file).
    """
    return save_arrays(bundle.to_arrays(), path, compress=compress)


# Arrays read before anything large, to know the layout: scalars, short strings, patch_grid.
_LAYOUT_KEYS = ("format", "attention_kind", "attention_heads", "attention_queries", "attention_keys", "patch_grid",
                "num_state_tokens", "num_action_tokens", "inference_step")
_SMALL_BYTES = 4096


def load_bundle(path: str | os.PathLike) -> CaptureBundle:
    """Read and validate a bundle written by `save_bundle`, never unpickling anything.

    The archive's .npy headers are checked first, without reading any array: every header must describe exactly
    the bytes its member holds, and the big arrays (attention, images, tokens) must fit the layout that the
    small ones describe. Only then are the arrays read, so a forged header never makes pi0viz allocate.

    Raises:
        BundleError naming the file and what was expected.
    """
    arrays = read_arrays(path, layout_keys=_LAYOUT_KEYS, check_headers=_check_headers)
    try:
        return CaptureBundle.from_arrays(arrays)
    except BundleError as err:
        raise BundleError(f"{path}: {err}") from None


def _check_headers(shapes: Mapping[str, tuple[int, ...]], small: Mapping[str, np.ndarray]) -> None:
    """The shapes of a bundle's arrays (from their headers) against the layout its small arrays describe."""
    fmt = _scalar(small, "format", str, None) if "format" in shapes else None
    if fmt not in SUPPORTED_FORMATS:
        raise BundleError(f"unknown bundle format {fmt!r}; this pi0viz reads {list(SUPPORTED_FORMATS)}"
                          f"{_decoding_hint(fmt)}")
    missing = [k for k in REQUIRED_KEYS if k not in shapes]
    if missing:
        raise BundleError(f"bundle is missing required keys {missing} (format {FORMAT}, see docs/capture-bundle.md)")
    for key in ("num_state_tokens", "num_action_tokens"):
        if key not in small:
            raise BundleError(f"{key} must be a scalar integer, got shape {list(shapes[key])}")
    att, cams, ids = shapes["attention"], shapes["camera_names"], shapes["token_ids"]
    if len(att) != 7:
        raise BundleError(f"attention must be a 7-d array [D, L, B, K, G, Q, S], got shape {list(att)}")
    if len(cams) != 1 or cams[0] == 0:
        raise BundleError(f"camera_names must be a non-empty [C] array, got shape {list(cams)}")
    if len(ids) != 2:
        raise BundleError(f"token_ids must have shape [B, T], got {list(ids)}")
    grid = small.get("patch_grid", np.asarray((16, 16)))
    heads = _scalar(small, "attention_heads", str, "all")
    if heads == "max" and att[3:5] != (1, 1):
        raise BundleError(f"attention_heads='max' means K = G = 1, got K, G = {att[3:5]}")
    try:
        layout = AttentionLayout(
            camera_names=tuple(f"camera {i}" for i in range(cams[0])),
            patch_grid=tuple(int(v) for v in np.asarray(grid).reshape(-1)[:2]),
            num_text_tokens=ids[1],
            num_state_tokens=_scalar(small, "num_state_tokens", int, None),
            num_action_tokens=_scalar(small, "num_action_tokens", int, None),
            keys=_scalar(small, "attention_keys", str, "all"),
            queries=_scalar(small, "attention_queries", str, "suffix"),
        )
    except (ValueError, IndexError, TypeError) as err:
        raise BundleError(f"inconsistent layout: {err}") from None
    _check_attention_shape(att, layout, layout.num_state_tokens, layout.num_action_tokens)
    D, L, B, C, T = att[0], att[1], att[2], cams[0], ids[1]
    want = {"images": (B, C, None, None, 3), "image_masks": (B, C), "token_ids": (B, T), "token_pieces": (B, T),
            "token_mask": (B, T), "diffusion_times": (D,), "step_indices": (D,), "layer_indices": (L,),
            "prompt": (B,)}
    for name, shape in want.items():
        if name in shapes:
            _expect_shape(shapes[name], name, shape)


def _check_attention_shape(shape: tuple[int, ...], layout: AttentionLayout, num_state: int, num_action: int) -> None:
    """attention [D, L, B, K, G, Q, S]: Q and S must be what the layout says."""
    Q, S = shape[5], shape[6]
    if S != layout.num_keys:
        raise BundleError(
            f"attention has S = {S} keys, but the layout ({layout.num_cameras} cameras x {layout.patches_per_camera} "
            f"patches + {layout.num_text_tokens} prompt + {num_state} state + {num_action} action tokens, "
            f"keys={layout.keys!r}) expects S = {layout.num_keys}"
        )
    if Q != layout.num_queries:
        raise BundleError(
            f"attention has Q = {Q} queries, but {num_state} state + {num_action} action tokens "
            f"(queries={layout.queries!r}) expect Q = {layout.num_queries}"
        )


def _decoding_hint(fmt: Any) -> str:
    """Where a pi0-FAST decoding bundle (pi0viz.capture/2) is read instead."""
    if fmt != "pi0viz.capture/2":
        return ""
    return (" (pi0viz.capture/2 is a pi0-FAST decoding bundle: read it with pi0viz.core.decode_bundle."
            "load_decode_bundle, or either kind with pi0viz.core.runs.load_call)")


def _check_indices(values: np.ndarray, name: str) -> None:
    """Stored step/layer indices name output folders: distinct, >= 0, int32."""
    v = np.asarray(values)
    if v.size == 0 or v.dtype.kind not in "iu":
        return  # shape and dtype errors are reported by _expect
    v = v.astype(np.int64)
    if (v < 0).any() or (v > INT32_MAX).any():
        bad = sorted({int(x) for x in v[(v < 0) | (v > INT32_MAX)]})[:5]
        raise BundleError(f"{name} holds {bad}, negative or out of int32 range; expected distinct indices >= 0")
    uniq, counts = np.unique(v, return_counts=True)
    if (counts > 1).any():
        raise BundleError(f"{name} holds duplicates {uniq[counts > 1].tolist()[:5]}: two stored entries would "
                          "write the same folders; expected distinct indices")


def _expect_shape(got: tuple[int, ...], name: str, shape: tuple) -> None:
    ok = len(got) == len(shape) and all(want is None or g == want for g, want in zip(got, shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise BundleError(f"{name} must have shape {want}, got {list(got)}")


def _expect(a: Any, name: str, shape: tuple, dtype: Any, *, kind: str | None = None) -> None:
    if not isinstance(a, np.ndarray):
        raise BundleError(f"{name} must be a numpy array, got {type(a).__name__}")
    _expect_shape(a.shape, name, shape)
    if dtype is not None and a.dtype != dtype:
        raise BundleError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if kind is not None and a.dtype.kind not in kind:
        raise BundleError(f"{name} has dtype {a.dtype}, expected kind {kind!r}")


def _scalar(arrays: Mapping[str, Any], key: str, typ: type, default: Any) -> Any:
    if key not in arrays:
        if default is None and key in ("format", "num_state_tokens", "num_action_tokens"):
            raise BundleError(f"bundle is missing {key!r} (format {FORMAT}, see docs/capture-bundle.md)")
        return default
    value = np.asarray(arrays[key])
    if value.ndim != 0:
        raise BundleError(f"{key} must be a scalar, got shape {list(value.shape)}")
    if typ is int and value.dtype.kind not in "iu":
        raise BundleError(f"{key} must be an integer, got {value.dtype} {value.item()!r}")
    if typ is str and value.dtype.kind != "U":
        raise BundleError(f"{key} must be a string, got {value.dtype}")
    return typ(value.item())
