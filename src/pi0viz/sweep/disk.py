"""Expected disk use of a sweep (or of examples/libero/main.py), printed before it starts, and the refusal when
the disk cannot hold it.

Estimates are upper bounds from the shapes: records count their arrays uncompressed (np.savez_compressed
usually does better), an episode counts every call its step limit allows, and a JPEG tree counts
`JPEG_BYTES_PER_FILE` per file, the mean measured by benchmarks/render_bench.py (370 MB for a full pi0 call of
36,000 files at quality 85).
"""

from __future__ import annotations

import dataclasses
import math

# The guard itself is shared with `pi0viz serve --record` (pi0viz.core.diskspace); its names stay reachable here.
from pi0viz.core.diskspace import HEADROOM, JPEG_BYTES_PER_FILE, check_free, format_bytes

__all__ = ["HEADROOM", "JPEG_BYTES_PER_FILE", "VIDEO_BYTES_PER_FRAME", "CallShape", "DiskEstimate",
           "calls_per_episode", "check_free", "estimate", "format_bytes"]

VIDEO_BYTES_PER_FRAME = 6_000  # H.264 224 x 224 rollout frames at 10 fps: measured 2-4 kB; 6 kB leaves room


@dataclasses.dataclass(frozen=True)
class CallShape:
    """Sizes of one inference call's attention as the sweep stores it.

    Attributes:
        steps: D' denoising steps kept. layers: L' layers kept. action_tokens: A.
        cameras: C' drawn (unmasked) cameras (LIBERO: 2). patches: image tokens per camera (pi0: 256).
        prompt_tokens: upper bound of drawn prompt tokens (pi0: 48 slots). image_side: model input pixels (224).
        action_dims: the robot's action width (LIBERO: 7).
    """

    steps: int
    layers: int
    action_tokens: int
    cameras: int = 2
    patches: int = 256
    prompt_tokens: int = 48
    image_side: int = 224
    action_dims: int = 7

    @property
    def drawn_keys(self) -> int:
        """R: the cameras' patches plus the prompt tokens."""
        return self.cameras * self.patches + self.prompt_tokens

    def record_bytes(self) -> int:
        """Bytes of one call in an episode record, uncompressed: fused float16 maps, region masses, images."""
        cells = self.steps * self.layers * self.action_tokens
        fused = cells * self.drawn_keys * 2
        mass = cells * (self.cameras + 1) * 2
        images = self.cameras * self.image_side ** 2 * 3
        return fused + mass + images + self.action_tokens * self.action_dims * 4

    def bundle_bytes(self, *, heads: int = 8, itemsize: int = 4) -> int:
        """Bytes of one call's full capture bundle (.npz): attention [D, L, 1, 1, heads, 1 + A, S] dominates.

        LIBERO's three camera slots (one padded) all hold keys: S = 3 x patches + prompt + 1 + A.
        """
        keys = (self.cameras + 1) * self.patches + self.prompt_tokens + 1 + self.action_tokens
        return self.steps * self.layers * heads * (1 + self.action_tokens) * keys * itemsize

    def jpeg_files(self) -> int:
        """Files of one call's attention_viz tree: one per drawn camera and the prompt, per cell."""
        return self.steps * self.layers * self.action_tokens * (self.cameras + 1)

    def jpeg_bytes(self) -> int:
        """Bytes of one call's attention_viz tree (JPEG_BYTES_PER_FILE per file)."""
        return self.jpeg_files() * JPEG_BYTES_PER_FILE


@dataclasses.dataclass(frozen=True)
class DiskEstimate:
    """Expected bytes of a run, in parts (all upper bounds)."""

    episodes: int
    calls_per_episode: int
    records: int
    videos: int
    jpeg_trees: int

    @property
    def total(self) -> int:
        return self.records + self.videos + self.jpeg_trees

    def describe(self) -> str:
        """One line: what will be written and how much."""
        parts = [f"records {format_bytes(self.records)}"]
        if self.videos:
            parts.append(f"videos {format_bytes(self.videos)}")
        parts.append(f"JPEG trees {format_bytes(self.jpeg_trees)}" if self.jpeg_trees else "no JPEG trees")
        per = format_bytes(self.total // max(self.episodes, 1))
        return (f"{self.episodes} episodes x <= {self.calls_per_episode} calls: expect <= {format_bytes(self.total)} "
                f"({', '.join(parts)}; {per} per episode)")


def calls_per_episode(max_steps: int, replan_steps: int, max_calls: int | None) -> int:
    """Upper bound of inference calls in an episode: one per `replan_steps` env steps, capped by max_calls."""
    calls = math.ceil(max_steps / replan_steps)
    return min(calls, max_calls) if max_calls is not None else calls


def estimate(shape: CallShape, *, episodes: int, calls: int, frames: int, video: bool, render: bool,
             render_every: int = 1, records: bool = True, call_bytes: int | None = None) -> DiskEstimate:
    """Bytes of `episodes` episodes of <= `calls` calls and <= `frames` video frames each.

    call_bytes: stored bytes per call instead of the sweep record's (e.g. `CallShape.bundle_bytes()`).
    """
    rendered = math.ceil(calls / render_every)
    per_call = shape.record_bytes() if call_bytes is None else call_bytes
    return DiskEstimate(
        episodes=episodes, calls_per_episode=calls,
        records=episodes * rendered * per_call if records else 0,
        videos=episodes * frames * VIDEO_BYTES_PER_FRAME if video else 0,
        jpeg_trees=episodes * rendered * shape.jpeg_bytes() if render else 0,
    )
