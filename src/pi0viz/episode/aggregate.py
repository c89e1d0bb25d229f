"""One picture per inference call: the fused attention of a chosen step, averaged over layers and action tokens.

An episode has ~40 calls x 10 steps x 18 layers x 50 action tokens of maps; a video frame or a Rerun time
point shows one per call. The default is the call's LAST denoising step (t = 0.1, the velocity that finishes
the actions), the mean over ALL stored layers and the mean over ALL action tokens of the head-fused (max over
heads) probabilities; `Selection` picks another step, a layer range or some action tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.maps import fused_maps
from pi0viz.errors import SelectionError
from pi0viz.core.selection import format_spans, parse_selection


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which part of a call is shown. Indices are the original ones (the tree's path numbers).

    Attributes:
        step: denoising step (0 = first, t = 1.0); None = the last stored step.
        layers: layers averaged, e.g. "12-17" or [0, 5]; None = all stored layers.
        action_tokens: action tokens averaged, e.g. "0-4"; None = all.
        batch_index: batch element of B > 1 captures.
    """

    step: int | None = None
    layers: str | Sequence[int] | None = None
    action_tokens: str | Sequence[int] | None = None
    batch_index: int = 0


@dataclasses.dataclass
class CallMaps:
    """The selected aggregate of one inference call, ready to draw or log.

    Attributes:
        call: the call's index in the episode (bundle.inference_step, else its position).
        camera_names: [C'] the drawn cameras (pi0viz.core.maps' camera rule: unmasked and attended), slot order.
        cameras: float32[C', rows, cols], per patch: mean over layers and action tokens of the max over heads.
        prompt: float32[n], the same per valid (non-pad) prompt token, in prompt order.
        prompt_pieces: [n] those tokens' pieces. prompt_slots: int[n] their index in the T slots.
        mass: float32[C' + 1], attention mass per region (cameras, then the prompt), head-averaged (for
            captures fused on the device: the sum of the fused map, an upper bound), same means.
        images: uint8[C', h, w, 3], what the model saw.
        step, t: the denoising step shown and its flow time. layers, action_tokens: what was averaged.
    """

    call: int
    camera_names: list[str]
    cameras: np.ndarray
    prompt: np.ndarray
    prompt_pieces: list[str]
    prompt_slots: np.ndarray
    mass: np.ndarray
    images: np.ndarray
    step: int
    t: float
    layers: list[int]
    action_tokens: list[int]

    @property
    def top(self) -> float:
        """Largest value over every camera patch and prompt token (the top of a per-call color scale)."""
        return float(max(self.cameras.max(initial=0.0), self.prompt.max(initial=0.0)))

    @property
    def region_names(self) -> list[str]:
        return [*self.camera_names, "prompt"]

    def label(self) -> str:
        """e.g. "call 3  step 9 (t=0.10)  layers 0-17  action tokens 0-49"."""
        return (f"call {self.call}  step {self.step} (t={self.t:.2f})  layers {spans(self.layers)}  "
                f"action tokens {spans(self.action_tokens)}")


def call_maps(bundle: CaptureBundle, selection: Selection = Selection(), *, call: int | None = None) -> CallMaps:
    """Fuse heads and average over the selection for one call.

    Only the selected step and layers are fused (a slice of the attention), so a full-size call costs one
    step's worth of fusion, not ten.

    Args:
        bundle: one call's capture.
        call: index to report; default bundle.inference_step, else 0.
    """
    b = selection.batch_index
    if not 0 <= b < bundle.batch_size:
        raise SelectionError(f"batch_index {b} out of range: the capture has batch size {bundle.batch_size}")
    steps = [int(s) for s in bundle.step_indices]
    step = steps[-1] if selection.step is None else int(selection.step)
    if step not in steps:
        raise SelectionError(f"denoising step {step} is not in this capture, which has steps {spans(steps)}")
    layers = parse_selection(selection.layers, [int(l) for l in bundle.layer_indices], "layers")  # SelectionError
    actions = parse_selection(selection.action_tokens, range(bundle.num_action_tokens), "action tokens")
    d = steps.index(step)
    layer_pos = [int(np.flatnonzero(bundle.layer_indices == l)[0]) for l in layers]
    # The one step (pi0viz.core.maps): the camera rule over the whole call, fusion of this step and these layers.
    fused = fused_maps(bundle, batch_index=b, step_pos=[d], layer_pos=layer_pos)  # FusionError: one line
    values = fused.fused[0][:, actions].mean(axis=(0, 1))  # [R]
    mass = fused.region_mass[0][:, actions].mean(axis=(0, 1))  # [N]
    rows, cols = bundle.patch_grid
    slots = fused.cameras
    cams = [values[start:stop].reshape(rows, cols) for _, start, stop in fused.regions[:-1]]
    _, start, stop = fused.regions[-1]
    token_slots = fused.text_slots
    t = float(bundle.diffusion_times[d])
    return CallMaps(
        call=int(call if call is not None else (bundle.inference_step or 0)),
        camera_names=[bundle.camera_names[c] for c in slots],
        cameras=np.stack(cams).astype(np.float32) if cams else np.zeros((0, rows, cols), np.float32),
        prompt=values[start:stop].astype(np.float32),
        prompt_pieces=list(fused.text_pieces),
        prompt_slots=token_slots,
        mass=mass.astype(np.float32),
        images=bundle.images[b, slots],
        step=step, t=t, layers=layers, action_tokens=actions,
    )


spans = format_spans  # how a selection is written in labels: "0-2,5,7-8" (the one formatter)
