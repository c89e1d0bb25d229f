"""One call's action-token attention over every key, as two dense float32 arrays the metrics share.

    attention [D, L, B, K, G, Q, S]  ->  mean [D, L, A, S]   head mean: a true probability distribution per row
                                         peak [D, L, A, S]   head max: what the renderer draws (fused map)

A = the action-token queries (the state query is dropped), S = every key of the capture. Masked keys stay
exactly 0. A pi0 call is 10 x 18 x 50 x 867 = 7.8 M values per array (31 MB float32), so everything
downstream is whole-array numpy. Both come from pi0viz.core.maps.action_key_maps, the renderer's fusion pass and
camera rule: logits are softmaxed and probabilities checked exactly as for the renderer.

A pi0-FAST decoding call (pi0viz.capture/2) has one query per decode step: `decode_key_maps` gives
mean / peak float32[J, L, S] over the unaligned prefix keys and the generated tokens' keys (DecodeKeyMaps).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.layout import AttentionLayout, Region
from pi0viz.core.maps import DrawnKeys, action_key_maps, decode_maps
from pi0viz.errors import AnalysisError, FusionError


@dataclasses.dataclass
class ActionMaps:
    """Action-token attention of one batch element of one call.

    Attributes:
        mean: float32[D, L, A, S], probability averaged over the query heads. For a capture whose heads were
            max-fused on the device (`heads_fused`) the per-head values are gone and this holds the fused
            values instead (then a row may sum to more than 1; masses are upper bounds).
        peak: float32[D, L, A, S], max over the query heads (the renderer's fused map).
        valid: bool[S], keys an action query may attend to (drawn cameras, prompt tokens, state, actions).
        layout: the key/query layout of the capture.
        step_labels: int[D], the denoising step numbers as in the tree (diffusion_timestep_N).
        layer_labels: int[L], the layer numbers as in the tree (layer_N).
        heads_fused: True when the capture held only the head max.
        drawn: the camera rule's result (pi0viz.core.maps.DrawnKeys): which camera slots are drawn and measured.
    """

    mean: np.ndarray
    peak: np.ndarray
    valid: np.ndarray
    layout: AttentionLayout
    step_labels: np.ndarray
    layer_labels: np.ndarray
    heads_fused: bool
    drawn: DrawnKeys

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.mean.shape  # type: ignore[return-value]

    @property
    def regions(self) -> list[Region]:
        """The key regions measured: the drawn cameras (the one camera rule), the prompt, state, actions."""
        return self.drawn.layout_regions(self.layout.regions())

    @property
    def drawn_mask(self) -> np.ndarray:
        """bool[C]: True for the camera slots that are drawn and measured."""
        return self.drawn.drawn_mask


def action_maps(bundle: CaptureBundle, *, batch: int = 0, check: bool = True) -> ActionMaps:
    """Head mean and head max of the action queries' attention, from the one fusion pass (pi0viz.core.maps).

    Args:
        bundle: a validated capture bundle (probabilities or logits, any head/key reduction).
        batch: batch element.
        check: verify that probabilities are probabilities over their valid keys (the renderer's check).

    Returns:
        ActionMaps with float32[D, L, A, S] arrays.

    Raises:
        AnalysisError: batch out of range, or attention that is not probabilities as claimed.
    """
    B = bundle.batch_size
    if not 0 <= batch < B:
        raise AnalysisError(f"batch {batch} out of range: the capture has batch size B = {B}")
    try:
        m = action_key_maps(bundle, batch_index=batch, check=check)
    except FusionError as err:
        raise AnalysisError(str(err)) from None
    return ActionMaps(mean=m.mean, peak=m.peak, valid=m.valid, layout=bundle.layout,
                      step_labels=np.asarray(bundle.step_indices), layer_labels=np.asarray(bundle.layer_indices),
                      heads_fused=m.heads_fused, drawn=m.drawn)


GENERATED_REGION = "generated"  # the key group of the tokens generated so far (pi0-FAST), in masses and sinks


@dataclasses.dataclass
class DecodeKeyMaps:
    """One pi0-FAST (decoding) call's attention: each decode step's one query over every key, heads reduced two ways.

    The decode step plays the denoising step's part and the step's single query the action tokens' part. The key
    axis S is the UNALIGNED prefix (camera c's patch i at c x rows x cols + i, then the T prompt slots: the pi0 key
    layout, so a camera and a prompt token mean what they mean for pi0), then, when the capture kept them, the Jg
    generated tokens' keys (slot P + i holds token i; step j's query sees tokens 0..j). Only the prefix keys count
    for the cameras and the prompt; the generated tokens' keys are their own group.

    Attributes:
        mean: float32[J, L, S] probability averaged over the query heads (a capture fused on the device: the fused
            values; masses are then upper bounds).
        peak: float32[J, L, S] max over the query heads: on the drawn keys, exactly `decode_maps(...).fused`.
        valid: bool[J, S] keys measured in each step's row: the drawn cameras' patches (the one camera rule), the
            non-pad prompt slots, and the tokens generated up to the step. A masked camera's keys are not measured
            even where openpi's decode steps attend to them (its decode mask tests `key >= prefix_start` only).
        drawn: the camera rule's result (pi0viz.core.maps.DrawnKeys, from `decode_maps`).
        regions: the key groups measured: each drawn camera, the prompt ("text"), then "generated" (kind
            "generated") when the capture kept the generated tokens' keys.
        num_prefix_keys: P = C x rows x cols + T.
        patch_grid, camera_names: as in the bundle (every camera slot).
        token_pieces: [T] the prompt slots' pieces. generated_pieces: [Jg] the generated tokens' pieces.
        step_labels, layer_labels: int64[J], int64[L] the decode steps and layers (the tree's path numbers).
        heads_fused: True when the capture held only the head max.
    """

    mean: np.ndarray
    peak: np.ndarray
    valid: np.ndarray
    drawn: DrawnKeys
    regions: list[Region]
    num_prefix_keys: int
    patch_grid: tuple[int, int]
    camera_names: list[str]
    token_pieces: list[str]
    generated_pieces: list[str]
    step_labels: np.ndarray
    layer_labels: np.ndarray
    heads_fused: bool

    @property
    def drawn_mask(self) -> np.ndarray:
        """bool[C]: True for the camera slots that are drawn and measured."""
        return self.drawn.drawn_mask

    @property
    def has_generated(self) -> bool:
        return self.mean.shape[-1] > self.num_prefix_keys


def decode_key_maps(bundle: DecodeBundle, *, batch: int = 0) -> DecodeKeyMaps:
    """Head mean and head max of each decode step's query over every key (see DecodeKeyMaps), with the drawn
    cameras and prompt slots of the one fused-maps step for decoding bundles (pi0viz.core.maps.decode_maps).

    Returns:
        DecodeKeyMaps with float32[J, L, S] arrays (pi0_fast_libero, 256 steps x 18 layers x 1204 keys: 22 MB each).

    Raises:
        AnalysisError: batch out of range.
    """
    if not isinstance(bundle, DecodeBundle):
        raise AnalysisError(f"expected a decoding bundle (pi0viz.capture/2), got {type(bundle).__name__}")
    B = bundle.batch_size
    if not 0 <= batch < B:
        raise AnalysisError(f"batch {batch} out of range: the capture has batch size B = {B}")
    try:  # the camera rule and the prompt slots: decode_maps' own (one step and layer fused: the rule sees the call)
        drawn = decode_maps(bundle, batch_index=batch, step_pos=[0], layer_pos=[0]).drawn
    except FusionError as err:
        raise AnalysisError(str(err)) from None
    J, L, _, K, G, _, S = bundle.attention.shape
    rows = bundle.attention[:, :, batch, :, :, 0, :].reshape(J, L, K * G, S).astype(np.float32)
    rows = bundle.unaligned(rows, batch)  # prefix keys in the pi0 layout, generated keys after them
    heads_fused = bundle.attention_heads == "max"
    mean = rows[:, :, 0] if heads_fused else rows.mean(axis=2, dtype=np.float32)
    peak = rows.max(axis=2)
    P, ppc = bundle.num_prefix_keys, bundle.patches_per_camera
    C = len(bundle.camera_names)
    valid = np.zeros((J, S), bool)
    valid[:, drawn.keys] = True  # drawn cameras' patches and non-pad prompt slots (unaligned indices)
    steps = np.asarray(bundle.step_indices, np.int64)
    if S > P:  # step j's query sees the tokens generated at steps 0..j (itself included)
        valid[:, P:] = np.arange(S - P)[None, :] <= steps[:, None]
    regions = [Region(name, "camera", c * ppc, (c + 1) * ppc)
               for c, name in zip(drawn.cameras, drawn.camera_names)]
    regions.append(Region("text", "text", C * ppc, P))
    if S > P:
        regions.append(Region(GENERATED_REGION, "generated", P, S))  # type: ignore[arg-type]  (a decode-only kind)
    return DecodeKeyMaps(mean=np.ascontiguousarray(mean), peak=peak, valid=valid, drawn=drawn, regions=regions,
                         num_prefix_keys=P, patch_grid=bundle.patch_grid, camera_names=list(bundle.camera_names),
                         token_pieces=[str(p) for p in bundle.token_pieces[batch]],
                         generated_pieces=bundle.pieces(batch), step_labels=steps,
                         layer_labels=np.asarray(bundle.layer_indices, np.int64), heads_fused=heads_fused)
