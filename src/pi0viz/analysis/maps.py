"""One call's action-token attention over every key, as two dense float32 arrays the metrics share.

    attention [D, L, B, K, G, Q, S]  ->  mean [D, L, A, S]   head mean: a true probability distribution per row
                                         peak [D, L, A, S]   head max: what the renderer draws (fused map)

A = the action-token queries (the state query is dropped), S = every key of the capture. Masked keys stay
exactly 0. A pi0 call is 10 x 18 x 50 x 867 = 7.8 M values per array (31 MB float32), so everything
downstream is whole-array numpy. Logits are softmaxed as the renderer does; probabilities are checked.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi0viz.core import fusion
from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.layout import AttentionLayout
from pi0viz.errors import AnalysisError


@dataclasses.dataclass
class ActionMaps:
    """Action-token attention of one batch element of one call.

    Attributes:
        mean: float32[D, L, A, S], probability averaged over the query heads. For a capture whose heads were
            max-fused on the device (`heads_fused`) the per-head values are gone and this holds the fused
            values instead (then a row may sum to more than 1; masses are upper bounds).
        peak: float32[D, L, A, S], max over the query heads (the renderer's fused map).
        valid: bool[S], keys an action query may attend to (unmasked cameras, prompt tokens, state, actions).
        layout: the key/query layout of the capture.
        step_labels: int[D], the denoising step numbers as in the tree (diffusion_timestep_N).
        layer_labels: int[L], the layer numbers as in the tree (layer_N).
        heads_fused: True when the capture held only the head max.
    """

    mean: np.ndarray
    peak: np.ndarray
    valid: np.ndarray
    layout: AttentionLayout
    step_labels: np.ndarray
    layer_labels: np.ndarray
    heads_fused: bool

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.mean.shape  # type: ignore[return-value]


def action_maps(bundle: CaptureBundle, *, batch: int = 0, check: bool = True) -> ActionMaps:
    """Head mean and head max of the action queries' attention, one denoising step at a time.

    Args:
        bundle: a validated capture bundle (probabilities or logits, any head/key reduction).
        batch: batch element.
        check: verify that probabilities sum to 1 over their valid keys (as the renderer does).

    Returns:
        ActionMaps with float32[D, L, A, S] arrays.

    Raises:
        AnalysisError: batch out of range, or attention that is not probabilities as claimed.
    """
    D, L, B, K, G, _, S = bundle.attention.shape
    if not 0 <= batch < B:
        raise AnalysisError(f"batch {batch} out of range: the capture has batch size B = {B}")
    layout = bundle.layout
    b = slice(batch, batch + 1)
    valid_qs = fusion.key_validity(layout, bundle.image_masks[b], bundle.token_mask[b])  # [1, Q, S]
    actions = layout.action_queries()
    A = layout.num_action_tokens
    heads_fused = bundle.attention_heads == "max"
    full = not heads_fused and bundle.attention_keys == "all"
    mean = np.empty((D, L, A, S), np.float32)
    peak = np.empty((D, L, A, S), np.float32)
    for d in range(D):  # one step at a time: temporaries stay one step in size (pi0: 25 MB)
        chunk = bundle.attention[d, :, b]  # [L, 1, K, G, Q, S]
        if bundle.attention_kind == "logits":
            chunk = fusion.logits_to_probs(chunk, valid_qs)
        rows = chunk[:, 0, :, :, actions].reshape(L, K * G, A, S)  # [L, N, A, S]
        # Head by head into the outputs: 2-3x faster than mean/max over a middle axis of a strided view.
        m, p = mean[d], peak[d]
        np.copyto(m, rows[:, 0])
        np.copyto(p, rows[:, 0])
        for n in range(1, K * G):
            np.add(m, rows[:, n], out=m)
            np.maximum(p, rows[:, n], out=p)
        m *= np.float32(1.0 / (K * G))
    valid = valid_qs[0, actions.start]
    if check and bundle.attention_kind == "probs":
        _check_probs(mean, peak, valid, sums_to_one=full)
    return ActionMaps(mean=mean, peak=peak, valid=valid, layout=layout,
                      step_labels=np.asarray(bundle.step_indices), layer_labels=np.asarray(bundle.layer_indices),
                      heads_fused=heads_fused)


def _check_probs(mean: np.ndarray, peak: np.ndarray, valid: np.ndarray, *, sums_to_one: bool,
                 atol: float = 0.02) -> None:
    """Probabilities as claimed? Checked on the reduced arrays (the full tensor is 8x larger): values in [0, 1]
    and, for full captures, head-mean rows that sum to 1 over the valid keys with ~0 on masked keys (a row of
    the head mean sums to 1 exactly when its heads do on average; the renderer checks every head)."""
    hint = ("if these are pre-softmax scores, the bundle needs attention_kind='logits'; if the heads were max-fused "
            "on the device, attention_heads='max'")
    lo, hi = float(mean.min()), float(peak.max())
    if lo < -atol or hi > 1 + atol:
        raise AnalysisError(f"attention_kind='probs' but values span [{lo:.4g}, {hi:.4g}], outside [0, 1]; {hint}")
    if not sums_to_one:
        return
    inside = np.einsum("dlas,s->dla", mean, valid.astype(np.float32))  # [D, L, A]
    outside = mean.sum(axis=-1) - inside
    worst = float(np.abs(inside - 1).max()) if inside.size else 0.0
    if worst > atol or (outside.size and float(outside.max()) > atol):
        raise AnalysisError(f"attention_kind='probs' but action rows do not sum to 1 over their valid keys (worst "
                            f"|sum - 1| = {worst:.3g}, tolerance {atol}); {hint}, or check camera/token masks")
