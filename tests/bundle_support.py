"""Shared test helper: a small pi0-shaped synthetic bundle (2 steps, 3 layers, 5 action tokens)."""

from __future__ import annotations

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.synthetic import synthetic_bundle


def small(**kw) -> CaptureBundle:
    """synthetic_bundle with small D, L and action horizon unless given; other kwargs pass through."""
    kw.setdefault("num_steps", 2)
    kw.setdefault("num_layers", 3)
    kw.setdefault("num_action_tokens", 5)
    return synthetic_bundle(**kw)
