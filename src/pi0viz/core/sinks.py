"""Attention sinks: the criterion for keys that soak up attention whatever the query asks.

Criterion (per call, denoising step and layer; `SinkCriterion`): key s is a sink in (step d, layer l) when its
fused probability (max over heads, the value the renderer draws) is at least `min_value` (default 0.2) in at
least `row_fraction` (default 90 %) of the action-token rows of that step and layer:

    sink[d, l, s]  =  mean_a( peak[d, l, a, s] >= min_value )  >=  row_fraction

Why this test: a sink is content-blind, so it shows up in (almost) every row, and it is large, so it sets the
color scale. 0.2 is 170 x the uniform share of pi0's 867 keys; a key that merely catches one action token's eye
(a hot object patch) fails the row test, and independent random rows never pass it (for a key to reach 0.2 in
45 of 50 Dirichlet rows is astronomically unlikely). What it cannot tell apart: an object that *every* action
token of a step and layer looks at with >= 0.2. Compare sinks across calls (the "keys" of
`pi0viz.analysis.sinks.sink_report`): a true sink stays on the same key while the scene changes.

The share a sink takes is reported as head-mean probability mass (the fraction of the row's attention it really
receives, averaged over the action tokens), so "the BOS token takes 0.6 of layer 3" means exactly that.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi0viz.errors import AnalysisError


@dataclasses.dataclass(frozen=True)
class SinkCriterion:
    """When a key counts as a sink (see the module docstring).

    Attributes:
        min_value: fused probability (max over heads) the key must reach in a row, in (0, 1].
        row_fraction: share of the action-token rows of a (step, layer) in which it must reach it, in (0, 1].
    """

    min_value: float = 0.2
    row_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.min_value <= 1:
            raise AnalysisError(f"sink min_value must be in (0, 1], got {self.min_value}")
        if not 0 < self.row_fraction <= 1:
            raise AnalysisError(f"sink row_fraction must be in (0, 1], got {self.row_fraction}")


def detect_sinks(peak: np.ndarray, valid: np.ndarray, criterion: SinkCriterion = SinkCriterion()) -> np.ndarray:
    """Which keys are sinks in each (step, layer).

    Args:
        peak: float[D, L, A, S], fused (max over heads) probabilities of the action rows.
        valid: bool[S], keys the action rows may attend to (masked keys are never sinks).
        criterion: thresholds.

    Returns:
        bool[D, L, S].
    """
    A = peak.shape[2]
    rows_needed = int(np.ceil(criterion.row_fraction * A - 1e-9))  # integer count: no float ties
    hits = np.count_nonzero(peak >= criterion.min_value, axis=2)  # [D, L, S]
    return (hits >= max(rows_needed, 1)) & np.asarray(valid, bool)
