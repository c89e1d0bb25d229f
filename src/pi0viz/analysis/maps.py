"""One call's action-token attention over every key, as two dense float32 arrays the metrics share.

    attention [D, L, B, K, G, Q, S]  ->  mean [D, L, A, S]   head mean: a true probability distribution per row
                                         peak [D, L, A, S]   head max: what the renderer draws (fused map)

A = the action-token queries (the state query is dropped), S = every key of the capture. Masked keys stay
exactly 0. A pi0 call is 10 x 18 x 50 x 867 = 7.8 M values per array (31 MB float32), so everything
downstream is whole-array numpy. Both come from pi0viz.core.maps.action_key_maps, the renderer's fusion pass and
camera rule: logits are softmaxed and probabilities checked exactly as for the renderer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.layout import AttentionLayout, Region
from pi0viz.core.maps import DrawnKeys, action_key_maps
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
