"""The decoding bundle: one autoregressive (pi0-FAST) inference call's attention as plain arrays.

pi0-FAST has no denoising steps: after the prefill it generates tokens one per **decode step** (axis J), and each
generated token is the one query of its step over the kv-cache slots: the ALIGNED prefix (openpi rolls each
element's prefix so that the prompt padding sits in front: slot s holds unaligned prefix index key_source[b, s],
camera c's patch i being c x rows x cols + i, then the prompt slots), then the tokens generated so far. This is
format `pi0viz.capture/2` (`call_kind` "decoding"); `pi0viz.capture/1` (CaptureBundle, denoising calls) is
unchanged. Numpy only; docs/capture-bundle.md lists every key.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from pi0viz.core.bundle import (
    _check_indices,
    _expect,
    _expect_shape,
    _scalar,
    check_required,
    common_fields,
    index_arrays,
    input_arrays,
    optional_array,
    optional_arrays,
    read_arrays,
    save_arrays,
)
from pi0viz.core.selection import folder_index
from pi0viz.errors import BundleError

DECODE_FORMAT = "pi0viz.capture/2"
CALL_KIND = "decoding"
DECODE_REQUIRED_KEYS = ("attention", "camera_names", "images", "image_masks", "token_ids", "token_pieces",
                        "token_mask", "generated_ids", "key_len", "prefix_start", "key_source")


@dataclasses.dataclass
class DecodeBundle:
    """One pi0-FAST call's decode attention plus the inputs needed to draw it.

    Shapes: J stored decode steps, L layers, B batch, K kv heads, G query heads per kv head, one query per step,
    S kv-cache slots (P aligned prefix slots, then `attention_keys == "all"`: one per generated token), C cameras,
    T prompt slots, P = C x rows x cols + T, Jg tokens generated in the call.

    Attributes:
        attention: float16/float32[J, L, B, K, G, 1, S] post-softmax probabilities of each stored step's query.
        camera_names: [C] camera slots in (unaligned) token order.
        images: uint8[B, C, h, w, 3] the images the model saw.
        image_masks: bool[B, C]; False = a masked camera (not drawn; openpi's decode steps may still attend to it).
        token_ids, token_pieces, token_mask: [B, T] the prompt (unaligned), its display pieces, False = padding.
        generated_ids: int32[B, Jg] the ids generated in the call (decode step j picked id j).
        key_len: int32[J] valid kv-cache length of each stored step (P + j + 1); later slots are empty.
        prefix_start: int32[B] the first aligned slot the decode steps attend to (P - valid prefix slots).
        key_source: int32[B, P] the unaligned prefix index each aligned slot holds (a permutation of 0..P-1).
        patch_grid: (rows, cols) image tokens per camera, raster order.
        attention_heads: "all" or "max" (fused on the device; K = G = 1).
        attention_keys: "all" (S = P + Jg) or "prefix" (S = P: the generated tokens' keys were not kept).
        generated_pieces: [B, Jg] str display pieces of the generated ids, or None ("#<id>" is shown).
        step_indices: int32[J] which decode steps are stored (default 0..J-1, each < Jg).
        layer_indices: int32[L] which layers are stored (default 0..L-1).
        prompt: [B] str the raw prompt, or None. inference_step: the call's index in an episode, or None.
    """

    attention: np.ndarray
    camera_names: list[str]
    images: np.ndarray
    image_masks: np.ndarray
    token_ids: np.ndarray
    token_pieces: np.ndarray
    token_mask: np.ndarray
    generated_ids: np.ndarray
    key_len: np.ndarray
    prefix_start: np.ndarray
    key_source: np.ndarray
    patch_grid: tuple[int, int] = (16, 16)
    attention_heads: Literal["all", "max"] = "all"
    attention_keys: Literal["all", "prefix"] = "all"
    generated_pieces: np.ndarray | None = None
    step_indices: np.ndarray | None = None
    layer_indices: np.ndarray | None = None
    prompt: np.ndarray | None = None
    inference_step: int | None = None

    def __post_init__(self) -> None:
        self.camera_names = [str(n) for n in np.asarray(self.camera_names).reshape(-1)]
        self.patch_grid = (int(self.patch_grid[0]), int(self.patch_grid[1]))
        att = self.attention
        if self.step_indices is None:
            self.step_indices = np.arange(att.shape[0] if getattr(att, "ndim", 0) else 0, dtype=np.int32)
        if self.layer_indices is None:
            self.layer_indices = np.arange(att.shape[1] if getattr(att, "ndim", 0) > 1 else 0, dtype=np.int32)
        self.validate()

    # -- derived -------------------------------------------------------------------------------------

    @property
    def patches_per_camera(self) -> int:
        return self.patch_grid[0] * self.patch_grid[1]

    @property
    def num_prefix_keys(self) -> int:
        """P = C x rows x cols + T."""
        return len(self.camera_names) * self.patches_per_camera + int(self.token_ids.shape[1])

    @property
    def num_generated(self) -> int:
        """Jg, the tokens generated in the call."""
        return int(self.generated_ids.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.attention.shape[2])

    def pieces(self, batch_index: int = 0) -> list[str]:
        """Display pieces of the generated tokens of one batch element ("#<id>" without a tokenizer's pieces)."""
        if self.generated_pieces is not None:
            return [str(p) for p in self.generated_pieces[batch_index]]
        return [f"#{int(i)}" for i in self.generated_ids[batch_index]]

    def unaligned(self, values: np.ndarray, batch_index: int = 0) -> np.ndarray:
        """values [..., S] over kv-cache slots -> [..., P + S - P]: the prefix in unaligned order (cameras' patches
        in raster order, then the prompt slots; the pi0 key layout), the generated tokens' slots after it."""
        p = self.num_prefix_keys
        out = np.empty_like(values)
        out[..., self.key_source[batch_index]] = values[..., :p]
        out[..., p:] = values[..., p:]
        return out

    # -- validation ------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every shape, dtype and value; raise a one-line BundleError saying what was expected."""
        att = self.attention
        if not isinstance(att, np.ndarray) or att.ndim != 7:
            raise BundleError("attention must be a 7-d array [J decode steps, L layers, B batch, K kv heads, G heads, "
                              f"1 query, S kv-cache slots], got shape {getattr(att, 'shape', type(att))}")
        if att.dtype.kind != "f":
            raise BundleError(f"attention must be float16/float32 (bfloat16: convert to float32), got {att.dtype}")
        if self.attention_heads not in ("all", "max"):
            raise BundleError(f"attention_heads must be 'all' or 'max', got {self.attention_heads!r}")
        if self.attention_keys not in ("all", "prefix"):
            raise BundleError(f"attention_keys must be 'all' or 'prefix', got {self.attention_keys!r}")
        J, L, B, K, G, Q, S = att.shape
        if self.attention_heads == "max" and (K, G) != (1, 1):
            raise BundleError(f"attention_heads='max' means K = G = 1, got K, G = {(K, G)}")
        if Q != 1:
            raise BundleError(f"a decoding bundle has one query per decode step, got Q = {Q}")
        rows, cols = self.patch_grid
        if rows <= 0 or cols <= 0:
            raise BundleError(f"patch_grid must be two positive ints (rows, cols), got {self.patch_grid}")
        C = len(self.camera_names)
        if not C or len(set(self.camera_names)) != C:
            raise BundleError(f"camera_names must be non-empty and unique, got {self.camera_names}")
        _expect(self.images, "images", (B, C, None, None, 3), np.uint8)
        _expect(self.image_masks, "image_masks", (B, C), np.bool_)
        _expect(self.token_ids, "token_ids", (B, None), None, kind="iu")
        T = self.token_ids.shape[1]
        _expect(self.token_mask, "token_mask", (B, T), np.bool_)
        _expect(self.token_pieces, "token_pieces", (B, T), None, kind="U")
        _expect(self.generated_ids, "generated_ids", (B, None), None, kind="iu")
        Jg, P = self.num_generated, self.num_prefix_keys
        want_s = P if self.attention_keys == "prefix" else P + Jg
        if S != want_s:
            raise BundleError(f"attention has S = {S} kv-cache slots, but {C} cameras x {rows * cols} patches + {T} "
                              f"prompt slots{'' if self.attention_keys == 'prefix' else f' + {Jg} generated tokens'} "
                              f"(keys={self.attention_keys!r}) expect S = {want_s}")
        if self.generated_pieces is not None:
            _expect(self.generated_pieces, "generated_pieces", (B, Jg), None, kind="U")
        _expect(self.step_indices, "step_indices", (J,), None, kind="iu")
        _expect(self.layer_indices, "layer_indices", (L,), None, kind="iu")
        for name in ("step_indices", "layer_indices"):
            _check_indices(getattr(self, name), name)
        if J and int(np.max(self.step_indices)) >= Jg:
            raise BundleError(f"step_indices go up to {int(np.max(self.step_indices))}, but only {Jg} tokens were "
                              "generated: expected decode steps < the number of generated tokens")
        _expect(self.key_len, "key_len", (J,), None, kind="iu")
        if J and ((self.key_len <= P) | (self.key_len > P + Jg)).any():
            raise BundleError(f"key_len must lie in ({P}, {P + Jg}] (the prefix plus the tokens up to the step), "
                              f"got {np.asarray(self.key_len).tolist()[:5]}")
        _expect(self.prefix_start, "prefix_start", (B,), None, kind="iu")
        if ((self.prefix_start < 0) | (self.prefix_start > P)).any():
            raise BundleError(f"prefix_start must lie in [0, {P}], got {np.asarray(self.prefix_start).tolist()[:5]}")
        _expect(self.key_source, "key_source", (B, P), None, kind="iu")
        if P and (np.sort(self.key_source, axis=1) != np.arange(P)).any():
            raise BundleError(f"key_source must hold a permutation of 0..{P - 1} per batch element (the unaligned "
                              "prefix index of every aligned slot)")
        if self.prompt is not None:
            _expect(self.prompt, "prompt", (B,), None, kind="U")
        if self.inference_step is not None:
            self.inference_step = folder_index(self.inference_step, "inference_step", BundleError)
        if np.isnan(att).any() or np.isinf(att).any():
            raise BundleError("attention contains NaN or inf: expected probabilities in [0, 1]")

    # -- (de)serialization -------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The bundle as a flat {name: ndarray} mapping (npz keys; no objects)."""
        out: dict[str, np.ndarray] = {
            "format": np.asarray(DECODE_FORMAT),
            "call_kind": np.asarray(CALL_KIND),
            "attention": self.attention,
            "attention_kind": np.asarray("probs"),
            "attention_heads": np.asarray(self.attention_heads),
            "attention_keys": np.asarray(self.attention_keys),
            **input_arrays(self),
            "generated_ids": self.generated_ids.astype(np.int32),
            "key_len": np.asarray(self.key_len, dtype=np.int32),
            "prefix_start": np.asarray(self.prefix_start, dtype=np.int32),
            "key_source": np.asarray(self.key_source, dtype=np.int32),
            **index_arrays(self),
        }
        if self.generated_pieces is not None:
            out["generated_pieces"] = self.generated_pieces
        out.update(optional_arrays(self))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> "DecodeBundle":
        """Build (and validate) a decoding bundle from a flat mapping as written by `to_arrays`."""
        _check_kind(arrays)
        check_required(arrays, DECODE_REQUIRED_KEYS, DECODE_FORMAT)
        return cls(
            **common_fields(arrays),
            generated_ids=np.asarray(arrays["generated_ids"]),
            key_len=np.asarray(arrays["key_len"]),
            prefix_start=np.asarray(arrays["prefix_start"]),
            key_source=np.asarray(arrays["key_source"]),
            generated_pieces=optional_array(arrays, "generated_pieces"),
        )


def _check_kind(arrays: Mapping[str, Any]) -> None:
    """format pi0viz.capture/2, call_kind "decoding", attention_kind "probs"; else one line."""
    fmt = _scalar(arrays, "format", str, None)
    if fmt != DECODE_FORMAT:
        raise BundleError(f"not a decoding bundle: format {fmt!r}, expected {DECODE_FORMAT!r} "
                          "(pi0viz.load_bundle reads pi0viz.capture/1)")
    kind = _scalar(arrays, "call_kind", str, CALL_KIND)
    if kind != CALL_KIND or _scalar(arrays, "attention_kind", str, "probs") != "probs":
        raise BundleError(f"a {DECODE_FORMAT} bundle holds call_kind 'decoding' and attention_kind 'probs', got "
                          f"{kind!r}")


# Read before anything large (core.bundle.read_arrays): the scalars and patch_grid that fix the layout.
_LAYOUT_KEYS = ("format", "call_kind", "attention_kind", "attention_heads", "attention_keys", "patch_grid")


def _check_headers(shapes: Mapping[str, tuple[int, ...]], small: Mapping[str, np.ndarray]) -> None:
    """The arrays' shapes (from the .npy headers, nothing read) against the layout: attention [J, L, B, K, G, 1, S]
    with S = C x rows x cols + T (+ Jg), the inputs [B, C, ...] / [B, T], the per-step arrays [J]."""
    _check_kind(small)
    check_required(shapes, DECODE_REQUIRED_KEYS, DECODE_FORMAT)
    att, cams, ids, gen = shapes["attention"], shapes["camera_names"], shapes["token_ids"], shapes["generated_ids"]
    if len(att) != 7 or len(cams) != 1 or len(ids) != 2 or len(gen) != 2:
        raise BundleError(f"expected attention [J, L, B, K, G, 1, S], camera_names [C], token_ids [B, T], "
                          f"generated_ids [B, Jg]; got {list(att)}, {list(cams)}, {list(ids)}, {list(gen)}")
    grid = [int(v) for v in np.asarray(small.get("patch_grid", (16, 16))).reshape(-1)[:2]]
    if len(grid) != 2 or min(grid) <= 0:
        raise BundleError(f"patch_grid must be two positive ints (rows, cols), got {grid}")
    J, L, B, S = att[0], att[1], att[2], att[6]
    C, T, Jg = cams[0], ids[1], gen[1]
    P = C * grid[0] * grid[1] + T
    want_s = P if _scalar(small, "attention_keys", str, "all") == "prefix" else P + Jg
    if S != want_s:
        raise BundleError(f"attention has S = {S} kv-cache slots, but {C} cameras x {grid[0] * grid[1]} patches + "
                          f"{T} prompt slots (+ {Jg} generated tokens with keys 'all') expect S = {want_s}")
    want = {"images": (B, C, None, None, 3), "image_masks": (B, C), "token_pieces": (B, T), "token_mask": (B, T),
            "generated_ids": (B, None), "generated_pieces": (B, Jg), "key_len": (J,), "prefix_start": (B,),
            "key_source": (B, P), "step_indices": (J,), "layer_indices": (L,), "prompt": (B,)}
    for name, shape in want.items():
        if name in shapes:
            _expect_shape(shapes[name], name, shape)


def save_decode_bundle(bundle: DecodeBundle, path: str | os.PathLike, *, compress: bool = False) -> Path:
    """Write a decoding bundle to `path` (.npz) atomically and durably, as `save_bundle` does."""
    return save_arrays(bundle.to_arrays(), path, compress=compress)


def load_decode_bundle(path: str | os.PathLike) -> DecodeBundle:
    """Read and validate a decoding bundle written by `save_decode_bundle`, never unpickling anything; the
    headers are checked against the layout before any large array is read (as `load_bundle` does).

    Raises:
        BundleError naming the file and what was expected.
    """
    arrays = read_arrays(path, layout_keys=_LAYOUT_KEYS, check_headers=_check_headers)
    try:
        return DecodeBundle.from_arrays(arrays)
    except BundleError as err:
        raise BundleError(f"{path}: {err}") from None
