"""One picture per inference call: the fused attention of a chosen step, averaged over layers and action tokens.

An episode has ~40 calls x 10 steps x 18 layers x 50 action tokens of maps; a video frame or a Rerun time
point shows one per call. The default is the call's LAST denoising step (t = 0.1, the velocity that finishes
the actions), the mean over ALL stored layers and the mean over ALL action tokens of the head-fused (max over
heads) probabilities; `Selection` picks another step, a layer range or some action tokens.

A pi0-FAST decoding call (DecodeBundle) has decode steps, one query each, and no action tokens: its picture is the
mean over ALL its decode steps (each generated token's query) and the stored layers (`Selection.step` picks one decode
step instead), from the one fused-maps step for decoding bundles (pi0viz.core.maps.decode_maps). Its cameras and
prompt are the prefix keys; the tokens generated so far are their own group (their mass: `generated_mass`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.maps import decode_maps, fused_maps
from pi0viz.render.panels import display_piece
from pi0viz.errors import SelectionError
from pi0viz.core.selection import format_spans, parse_selection


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which part of a call is shown. Indices are the original ones (the tree's path numbers).

    Attributes:
        step: denoising step (0 = first, t = 1.0); None = the last stored step. A decoding (pi0-FAST) call: one
            decode step; None = the mean over all its stored decode steps.
        layers: layers averaged, e.g. "12-17" or [0, 5]; None = all stored layers.
        action_tokens: action tokens averaged, e.g. "0-4"; None = all (a decoding call has none: leave None).
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
        call_kind: "denoising" or "decoding" (pi0-FAST). For a decoding call: `decode_steps` the decode steps averaged
            (step = the one shown, or -1 for the mean over them; t = NaN; action_tokens = []), `generated_mass` the
            head-averaged mass on the tokens generated so far (None: the capture kept prefix keys only), and
            `token` the generated piece of the one decode step shown (None for the mean).
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
    call_kind: str = "denoising"
    decode_steps: list[int] = dataclasses.field(default_factory=list)
    generated_mass: float | None = None
    token: str | None = None

    @property
    def decoding(self) -> bool:
        return self.call_kind == "decoding"

    @property
    def step_words(self) -> str:
        """The step part of a label: "step 9 (t=0.10)"; decoding: "decode steps 0-23 (mean)" or
        'decode step 5 "tok"'."""
        if not self.decoding:
            return f"step {self.step} (t={self.t:.2f})"
        if self.step < 0:
            return f"decode steps {spans(self.decode_steps)} (mean)"
        return f'decode step {self.step} "{display_piece(self.token or "")}"'

    @property
    def top(self) -> float:
        """Largest value over every camera patch and prompt token (the top of a per-call color scale)."""
        return float(max(self.cameras.max(initial=0.0), self.prompt.max(initial=0.0)))

    @property
    def region_names(self) -> list[str]:
        return [*self.camera_names, "prompt"]

    def label(self) -> str:
        """e.g. "call 3  step 9 (t=0.10)  layers 0-17  action tokens 0-49"; decoding: "call 3  decode steps 0-23
        (mean)  layers 0-17"."""
        if self.decoding:
            return f"call {self.call}  {self.step_words}  layers {spans(self.layers)}"
        return (f"call {self.call}  step {self.step} (t={self.t:.2f})  layers {spans(self.layers)}  "
                f"action tokens {spans(self.action_tokens)}")


def call_maps(bundle: CaptureBundle | DecodeBundle, selection: Selection = Selection(), *,
              call: int | None = None) -> CallMaps:
    """Fuse heads and average over the selection for one call.

    Only the selected step and layers are fused (a slice of the attention), so a full-size call costs one
    step's worth of fusion, not ten.

    Args:
        bundle: one call's capture; a pi0-FAST decoding call goes to `decode_call_maps`.
        call: index to report; default bundle.inference_step, else 0.
    """
    if isinstance(bundle, DecodeBundle):
        return decode_call_maps(bundle, selection, call=call)
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


def decode_call_maps(bundle: DecodeBundle, selection: Selection = Selection(), *, call: int | None = None) -> CallMaps:
    """A decoding (pi0-FAST) call's picture: max over heads of each decode step's query on the prefix keys, averaged
    over the selected layers and over all stored decode steps (or the one `selection.step`).

    Raises:
        SelectionError (one line): action tokens selected (a decoding call has none), a decode step the call does
            not hold, layers or a batch element out of range.
    """
    b = selection.batch_index
    if not 0 <= b < bundle.batch_size:
        raise SelectionError(f"batch_index {b} out of range: the capture has batch size {bundle.batch_size}")
    if selection.action_tokens is not None:
        raise SelectionError("a decoding (pi0-FAST) call has no action tokens (one query per decode step): leave "
                             "the action-token selection out")
    steps = [int(s) for s in bundle.step_indices]
    if selection.step is not None and int(selection.step) not in steps:
        raise SelectionError(f"decode step {int(selection.step)} is not in this call "
                             f"(inference call {bundle.inference_step}), which has decode steps {spans(steps)}")
    shown = steps if selection.step is None else [int(selection.step)]
    layers = parse_selection(selection.layers, [int(l) for l in bundle.layer_indices], "layers")  # SelectionError
    layer_pos = [int(np.flatnonzero(bundle.layer_indices == l)[0]) for l in layers]
    # The one step (pi0viz.core.maps.decode_maps): the camera rule over the whole call, these steps and layers.
    maps = decode_maps(bundle, batch_index=b, step_pos=[steps.index(s) for s in shown], layer_pos=layer_pos)
    values = maps.fused.mean(axis=(0, 1))  # [R]
    mass = maps.region_mass.mean(axis=(0, 1))  # [C' + 2]: drawn cameras, the prompt, the generated tokens
    rows, cols = bundle.patch_grid
    cams = [values[start:stop].reshape(rows, cols) for _, start, stop in maps.regions[:-1]]
    _, start, stop = maps.regions[-1]
    pieces = maps.generated_pieces
    one = selection.step is not None
    return CallMaps(
        call=int(call if call is not None else (bundle.inference_step or 0)),
        camera_names=list(maps.drawn.camera_names),
        cameras=np.stack(cams).astype(np.float32) if cams else np.zeros((0, rows, cols), np.float32),
        prompt=values[start:stop].astype(np.float32),
        prompt_pieces=list(maps.drawn.text_pieces),
        prompt_slots=maps.drawn.text_slots,
        mass=mass[:-1].astype(np.float32),
        images=bundle.images[b, maps.drawn.cameras],
        step=int(shown[0]) if one else -1, t=float("nan"), layers=layers, action_tokens=[],
        call_kind="decoding", decode_steps=shown,
        generated_mass=float(mass[-1]) if maps.has_generated else None,
        token=(pieces[shown[0]] if shown[0] < len(pieces) else f"#{shown[0]}") if one else None,
    )


spans = format_spans  # how a selection is written in labels: "0-2,5,7-8" (the one formatter)
