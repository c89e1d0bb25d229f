"""Load openpi JAX parameters into a PyTorch pi0 / pi0.5 (LeRobot's policies, openpi's PI0Pytorch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pi0viz.errors import CheckpointError
from pi0viz.torch_capture.convert import openpi_to_torch_state_dict

# The action expert never decodes tokens, so its lm_head has no openpi counterpart.
_UNCONVERTED = ("paligemma_with_expert.gemma_expert.lm_head.weight",)


def load_openpi_params(model: torch.nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Copy openpi's flat JAX parameters ('/'-joined path -> array) into `model`, in place.

    `model` is a LeRobot PI0Policy / PI05Policy (keys under "model.") or openpi's PI0Pytorch (no prefix); each
    tensor keeps the model's dtype (bfloat16 parts stay bfloat16) and device.

    Raises:
        CheckpointError: the tree is not an openpi pi0 / pi0.5 tree, or it does not fit the model (the message
            names the first mismatching keys or shapes).
    """
    own = model.state_dict()
    prefix = "model." if any(k.startswith("model.paligemma_with_expert.") for k in own) else ""
    converted = openpi_to_torch_state_dict(params, prefix=prefix)
    unknown = sorted(set(converted) - set(own))
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} converted weights have no place in {type(model).__name__}, e.g. {unknown[:3]}")
    wrong = [f"{k}: model {tuple(own[k].shape)} vs checkpoint {v.shape}" for k, v in converted.items()
             if tuple(own[k].shape) != v.shape]
    if wrong:
        raise CheckpointError(f"checkpoint does not fit the model ({len(wrong)} shapes differ), e.g. {wrong[:2]}")
    missing = sorted(k for k in set(own) - set(converted) if not k.endswith(_UNCONVERTED))
    if missing:
        raise CheckpointError(f"{len(missing)} model weights are not in the checkpoint, e.g. {missing[:3]}")
    tensors: dict[str, Any] = {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(own[k].dtype) for k, v in converted.items()}
    model.load_state_dict(tensors, strict=False)
