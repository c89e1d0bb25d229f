"""The analysis' own reduction pass agrees with the renderer's fusion pass (one meaning per number)."""

from __future__ import annotations

import numpy as np
import pytest
from bundle_support import small

from pi0viz.analysis.maps import action_maps
from pi0viz.analysis.metrics import region_masses
from pi0viz.core import fusion
from pi0viz.errors import AnalysisError


def test_peak_and_region_mass_equal_the_fusion_pass() -> None:
    b = small()
    maps = action_maps(b)
    call = fusion.fuse_call(b.attention, b.layout, b.image_masks, b.token_mask)
    np.testing.assert_array_equal(maps.peak[..., call.keys], call.fused)  # the renderer's fused map, exactly
    drawn = fusion.drawn_region_index(b.layout, call.regions)
    regions = b.layout.regions()
    mass = np.stack([maps.mean[..., r.slice].sum(-1) for r in regions], -1)  # [D, L, A, M]
    np.testing.assert_allclose(mass[..., drawn], call.region_mass, atol=1e-6)  # head-mean mass per region
    rm = np.asarray(region_masses(maps)["mass"])  # [M, D, L], averaged over action tokens
    np.testing.assert_allclose(rm, mass.mean(axis=2).transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_allclose(maps.mean.sum(-1), 1.0, atol=1e-5)  # head-mean rows are distributions


def test_logits_give_the_same_maps_as_their_probabilities() -> None:
    b = small()
    probs = action_maps(b)
    with np.errstate(divide="ignore"):
        b.attention = np.log(b.attention)  # masked keys -> -inf, as a logits capture may hold
    b.attention_kind = "logits"
    logits = action_maps(b)
    np.testing.assert_allclose(logits.mean, probs.mean, atol=1e-6)
    np.testing.assert_allclose(logits.peak, probs.peak, atol=1e-6)


def test_scores_passed_as_probabilities_are_refused() -> None:
    b = small()
    b.attention = b.attention * 3  # rows sum to 3
    with pytest.raises(AnalysisError, match="do not sum to 1"):
        action_maps(b)
    with pytest.raises(AnalysisError, match="batch 2 out of range"):
        action_maps(small(), batch=2)
