"""Shared by the parity tests: an openpi reference case (tests/data/openpi_*_tiny/case_*.npz) as a model input."""

from __future__ import annotations

from pi0viz.model import Observation


def observation_of(case) -> Observation:
    """The Observation openpi's recorded call was given (images already in [-1, 1], batch axis included)."""
    keys = [str(k) for k in case["image_keys"]]
    return Observation(
        images={k: case[f"image/{k}"] for k in keys},
        image_masks={k: case[f"image_mask/{k}"] for k in keys},
        state=case["state"],
        tokenized_prompt=case["tokenized_prompt"],
        tokenized_prompt_mask=case["tokenized_prompt_mask"],
    )
