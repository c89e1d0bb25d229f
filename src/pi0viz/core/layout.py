"""Where each key and query of pi0's suffix attention comes from.

The suffix pass of pi0 attends from Q suffix queries to S keys laid out as

    [camera_0 patches | camera_1 patches | ... | prompt tokens | state tokens | action tokens]
     C * rows * cols                          T               n_state        n_action

(pi0: 3 * 256 + 48 + 1 + 50 = 867 keys; pi0.5: 3 * 256 + 200 + 0 + 10 = 978), and the queries are
`[state tokens | action tokens]`. Nothing here hard-codes those numbers: every count comes from the
inputs, so the same code serves pi0, pi0.5 and reduced captures (prefix keys only, action rows only).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

RegionKind = Literal["camera", "text", "state", "action"]


@dataclasses.dataclass(frozen=True)
class Region:
    """A contiguous run of keys `[start, stop)` that come from one source (a camera, the prompt, ...)."""

    name: str
    kind: RegionKind
    start: int
    stop: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass(frozen=True)
class AttentionLayout:
    """Token layout of one capture's key axis S and query axis Q.

    Attributes:
        camera_names: camera slots in token order, e.g. ("base_0_rgb", "left_wrist_0_rgb", ...).
        patch_grid: (rows, cols) of image tokens per camera; token p is patch (p // cols, p % cols).
        num_text_tokens: prompt slots T (48 for pi0, 200 for pi0.5), pads included.
        num_state_tokens: 1 for pi0, 0 for pi0.5.
        num_action_tokens: action horizon (50 for pi0).
        keys: "all" when S covers prefix + suffix keys, "prefix" when only cameras + prompt were kept.
        queries: "suffix" when Q = state + action tokens, "actions" when only action rows were kept.
    """

    camera_names: tuple[str, ...]
    patch_grid: tuple[int, int]
    num_text_tokens: int
    num_state_tokens: int
    num_action_tokens: int
    keys: Literal["all", "prefix"] = "all"
    queries: Literal["suffix", "actions"] = "suffix"

    def __post_init__(self) -> None:
        rows, cols = self.patch_grid
        if rows <= 0 or cols <= 0:
            raise ValueError(f"patch_grid must be two positive ints (rows, cols), got {self.patch_grid}")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"camera names must be unique, got {list(self.camera_names)}")
        for count, what in [
            (self.num_text_tokens, "num_text_tokens"),
            (self.num_state_tokens, "num_state_tokens"),
            (self.num_action_tokens, "num_action_tokens"),
        ]:
            if count < 0:
                raise ValueError(f"{what} must be >= 0, got {count}")
        if self.num_action_tokens == 0:
            raise ValueError("num_action_tokens must be >= 1: there is nothing to visualize without action tokens")
        if self.keys not in ("all", "prefix"):
            raise ValueError(f"keys must be 'all' or 'prefix', got {self.keys!r}")
        if self.queries not in ("suffix", "actions"):
            raise ValueError(f"queries must be 'suffix' or 'actions', got {self.queries!r}")

    # -- keys ------------------------------------------------------------------------------------

    @property
    def patches_per_camera(self) -> int:
        return self.patch_grid[0] * self.patch_grid[1]

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    @property
    def num_prefix_keys(self) -> int:
        return self.num_cameras * self.patches_per_camera + self.num_text_tokens

    @property
    def num_keys(self) -> int:
        """S, the length of the key axis this layout describes."""
        if self.keys == "prefix":
            return self.num_prefix_keys
        return self.num_prefix_keys + self.num_state_tokens + self.num_action_tokens

    def camera_region(self, camera: int | str) -> Region:
        """Keys of one camera's patches. `camera` is a slot index or a camera name."""
        index = self.camera_index(camera) if isinstance(camera, str) else camera
        if not 0 <= index < self.num_cameras:
            raise IndexError(f"camera index {index} out of range for {self.num_cameras} cameras")
        start = index * self.patches_per_camera
        return Region(self.camera_names[index], "camera", start, start + self.patches_per_camera)

    def camera_index(self, name: str) -> int:
        try:
            return self.camera_names.index(name)
        except ValueError:
            raise KeyError(f"unknown camera {name!r}; this capture has cameras {list(self.camera_names)}") from None

    @property
    def text_region(self) -> Region:
        start = self.num_cameras * self.patches_per_camera
        return Region("text", "text", start, start + self.num_text_tokens)

    @property
    def state_region(self) -> Region | None:
        """Keys of the state token(s); None when the capture holds prefix keys only."""
        if self.keys == "prefix":
            return None
        start = self.num_prefix_keys
        return Region("state", "state", start, start + self.num_state_tokens)

    @property
    def action_region(self) -> Region | None:
        """Keys of the action tokens; None when the capture holds prefix keys only."""
        if self.keys == "prefix":
            return None
        start = self.num_prefix_keys + self.num_state_tokens
        return Region("actions", "action", start, start + self.num_action_tokens)

    def regions(self) -> list[Region]:
        """All key regions in token order (empty regions, e.g. pi0.5's state, are left out)."""
        out = [self.camera_region(i) for i in range(self.num_cameras)] + [self.text_region]
        for region in (self.state_region, self.action_region):
            if region is not None and len(region):
                out.append(region)
        return out

    # -- queries ---------------------------------------------------------------------------------

    @property
    def num_queries(self) -> int:
        """Q, the length of the query axis this layout describes."""
        if self.queries == "actions":
            return self.num_action_tokens
        return self.num_state_tokens + self.num_action_tokens

    def action_query(self, action_token: int) -> int:
        """Index on the Q axis of action token `action_token` (0-based)."""
        if not 0 <= action_token < self.num_action_tokens:
            raise IndexError(f"action token {action_token} out of range [0, {self.num_action_tokens})")
        offset = 0 if self.queries == "actions" else self.num_state_tokens
        return offset + action_token

    def action_queries(self) -> slice:
        """Slice of the Q axis that holds the action tokens, in order."""
        offset = 0 if self.queries == "actions" else self.num_state_tokens
        return slice(offset, offset + self.num_action_tokens)
