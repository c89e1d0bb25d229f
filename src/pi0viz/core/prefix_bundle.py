"""The prefix's own attention of one call: a side file next to its capture bundle (`NAME.prefix.npz`, format
`pi0viz.prefix/1`).

A capture bundle holds the action tokens' attention (the suffix pass). Inside PaliGemma the prefix tokens (camera
patches and prompt tokens) also attend to each other, bidirectionally, in every layer: that is where, for example,
image tokens read the prompt and carry the named object forward (docs/causal.md). This file keeps three blocks of
that attention per layer, heads fused by max (as the bundle's `attention_heads = "max"`), float16:

    image_to_prompt  float16[L, C * N, T]      each image token (query) over the prompt slots (keys)
    image_to_image   float16[L, C * N, C * N]  each image token over every camera's patches
    prompt_to_image  float16[L, T, C * N]      each prompt slot over every camera's patches

C cameras of N = rows x cols patches each (in `camera_names` order, raster order inside a camera), T prompt slots
(pads included; `token_mask` False: a pad, whose rows are not meaningful and whose columns are 0). Rows are
probabilities over all P = C * N + T prefix keys, so a block's rows sum to at most 1.

Members: format, camera_names str[C], images uint8[C, h, w, 3], image_masks bool[C], token_pieces str[T],
token_mask bool[T], patch_grid int32[2], layer_indices int32[L], the three blocks, prompt (0-d str),
inference_step (0-d int32, -1 = none). Read through the guarded `NpzReader` (headers checked first, no pickle).
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pi0viz.core.npzfile import load_npz
from pi0viz.core.writes import atomic_write
from pi0viz.errors import BundleError

PREFIX_FORMAT = "pi0viz.prefix/1"
PREFIX_SUFFIX = ".prefix.npz"
BLOCKS = ("image_to_prompt", "image_to_image", "prompt_to_image")


def prefix_path(bundle_path: str | os.PathLike) -> Path:
    """NAME.prefix.npz next to the capture bundle NAME.npz."""
    path = Path(bundle_path)
    stem = path.name[:-4] if path.name.endswith(".npz") else path.name
    return path.with_name(stem + PREFIX_SUFFIX)


@dataclasses.dataclass
class PrefixAttention:
    """One call's prefix self-attention blocks (module docstring for shapes)."""

    camera_names: list[str]
    images: np.ndarray
    image_masks: np.ndarray
    token_pieces: np.ndarray
    token_mask: np.ndarray
    patch_grid: tuple[int, int]
    layer_indices: np.ndarray
    image_to_prompt: np.ndarray
    image_to_image: np.ndarray
    prompt_to_image: np.ndarray
    prompt: str = ""
    inference_step: int | None = None

    def __post_init__(self) -> None:
        self.camera_names = [str(c) for c in np.asarray(self.camera_names).reshape(-1)]
        self.patch_grid = (int(self.patch_grid[0]), int(self.patch_grid[1]))
        self.validate()

    @property
    def num_patches(self) -> int:
        return self.patch_grid[0] * self.patch_grid[1]

    def validate(self) -> None:
        """BundleError (one line) when the arrays do not fit each other."""
        c, n, t, l = len(self.camera_names), self.num_patches, len(self.token_pieces), len(self.layer_indices)
        want = {"image_to_prompt": (l, c * n, t), "image_to_image": (l, c * n, c * n),
                "prompt_to_image": (l, t, c * n)}
        for name, shape in want.items():
            x = getattr(self, name)
            if tuple(x.shape) != shape or x.dtype.kind != "f":
                raise BundleError(f"prefix attention {name}: {x.dtype} {list(x.shape)}, expected float {list(shape)} "
                                  f"({c} cameras x {n} patches, {t} prompt slots, {l} layers)")
        if self.images.ndim != 4 or self.images.shape[0] != c or self.images.dtype != np.uint8:
            raise BundleError(f"prefix attention images: {self.images.dtype} {list(self.images.shape)}, expected "
                              f"uint8 [{c}, h, w, 3]")
        if self.image_masks.shape != (c,) or self.token_mask.shape != (t,):
            raise BundleError("prefix attention image_masks / token_mask do not fit the cameras / prompt slots")

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"format": np.asarray(PREFIX_FORMAT), "camera_names": np.asarray(self.camera_names, str),
               "images": self.images, "image_masks": np.asarray(self.image_masks, bool),
               "token_pieces": np.asarray(self.token_pieces, str), "token_mask": np.asarray(self.token_mask, bool),
               "patch_grid": np.asarray(self.patch_grid, np.int32),
               "layer_indices": np.asarray(self.layer_indices, np.int32), "prompt": np.asarray(self.prompt, str),
               "inference_step": np.asarray(-1 if self.inference_step is None else self.inference_step, np.int32)}
        out.update({name: getattr(self, name) for name in BLOCKS})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], source: str = "prefix attention") -> "PrefixAttention":
        fmt = str(np.asarray(arrays.get("format", "")))
        if fmt != PREFIX_FORMAT:
            raise BundleError(f"{source}: format {fmt!r}, this pi0viz reads {PREFIX_FORMAT!r}")
        missing = [k for k in ("camera_names", "images", "image_masks", "token_pieces", "token_mask", "patch_grid",
                               "layer_indices", *BLOCKS) if k not in arrays]
        if missing:
            raise BundleError(f"{source}: missing {missing}")
        step = int(np.asarray(arrays.get("inference_step", -1)))
        return cls(camera_names=list(arrays["camera_names"]), images=np.asarray(arrays["images"]),
                   image_masks=np.asarray(arrays["image_masks"], bool), token_pieces=np.asarray(arrays["token_pieces"]),
                   token_mask=np.asarray(arrays["token_mask"], bool),
                   patch_grid=tuple(np.asarray(arrays["patch_grid"]).reshape(-1)[:2]),
                   layer_indices=np.asarray(arrays["layer_indices"], np.int32),
                   **{name: np.asarray(arrays[name]) for name in BLOCKS},
                   prompt=str(np.asarray(arrays.get("prompt", ""))), inference_step=None if step < 0 else step)


def prefix_blocks(attention: np.ndarray, num_cameras: int, num_patches: int) -> dict[str, np.ndarray]:
    """The three blocks (float16) of one call's prefix attention float[L, P, P] (heads already fused, batch
    taken): P = num_cameras * num_patches image tokens, then the prompt slots."""
    att = np.asarray(attention, np.float32)
    i = num_cameras * num_patches
    return {"image_to_prompt": att[:, :i, i:].astype(np.float16), "image_to_image": att[:, :i, :i].astype(np.float16),
            "prompt_to_image": att[:, i:, :i].astype(np.float16)}


def save_prefix(prefix: PrefixAttention, path: str | os.PathLike) -> Path:
    """Write atomically (core.writes) as an uncompressed .npz."""
    buf = io.BytesIO()
    np.savez(buf, **prefix.to_arrays())
    atomic_write(path, buf.getvalue())
    return Path(path)


def load_prefix(path: str | os.PathLike) -> PrefixAttention:
    """Read a `pi0viz.prefix/1` file (BundleError, one line, for anything else)."""
    return PrefixAttention.from_arrays(load_npz(path), source=str(path))
