"""openpi JAX parameters -> transformers' own PI0 (`PI0ForConditionalGeneration` / `PI0Model`, transformers >= 5.4).

The openpi side is read once, by `convert.openpi_to_torch_state_dict` (LeRobot's names); this module only renames
its keys to the model's. The target names come from the model's own `state_dict()`, because transformers renamed them
between releases (5.5.4 keeps SigLIP's `vision_model.` level, 5.23.0 drops it; the heads moved under
`embed_action_time.`): both sides are reduced to one canonical name and matched on it.

    LeRobot (convert.py)                                  canonical               native 5.23.0
    paligemma_with_expert.paligemma.model.X               vlm.X                   model.vlm.X
    paligemma_with_expert.gemma_expert.model.X            dit.X                   model.dit.X
    ....vision_tower.vision_model.Y                        vlm.vision_tower.Y      model.vlm.vision_tower.Y
    state_proj / action_in_proj / action_time_mlp_*       the same                embed_action_time.<the same>
    action_out_proj                                       action_out_proj         action_out_proj

A model weight no openpi parameter reaches is an error naming it (a silently random model is never returned), with
one exception: the expert's token embedding (`dit.embed_tokens`), which pi0 never reads (the expert is fed the
action embeddings; openpi's expert has no embedding), is set to zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pi0viz.errors import CheckpointError
from pi0viz.torch_capture.convert import openpi_to_torch_state_dict

# Path segments that only nest modules: dropped from both sides' names before matching.
_NESTING = {"model", "vision_model", "paligemma_with_expert", "embed_action_time"}
_RENAME = {"paligemma": "vlm", "gemma_expert": "dit"}
# Canonical names of weights pi0 never reads: zeros, not an error. The expert is fed embeddings, never token ids.
_UNREAD = ("dit.embed_tokens.weight",)
# Converted weights a native model may lack: PaliGemma's lm_head is the token embedding again (tied).
_OPTIONAL = ("vlm.lm_head.weight",)


def canonical_name(key: str) -> str:
    """A state-dict key of LeRobot's or transformers' pi0 with the nesting that differs between them removed.

    "model.vlm.vision_tower.encoder.layers.0.mlp.fc1.weight" and
    "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight" both give
    "vlm.vision_tower.encoder.layers.0.mlp.fc1.weight".
    """
    return ".".join(_RENAME.get(part, part) for part in key.split(".") if part not in _NESTING)


def openpi_to_native_state_dict(params: Mapping[str, np.ndarray], model_keys: Mapping[str, Any] | list[str]
                                ) -> dict[str, np.ndarray]:
    """Map openpi's flat pi0 parameters to the state-dict keys of a native PI0 model.

    Args:
        params: '/'-joined path -> array (openpi's `params_flat.npz` layout, as `openpi_to_torch_state_dict`).
        model_keys: the model's state-dict keys (or its state dict): the names to write.
    Returns:
        model key -> numpy array in torch layout, for every key of `model_keys` (`dit.embed_tokens` zeros when
        shapes are given, i.e. `model_keys` is a state dict).
    Raises:
        CheckpointError: the tree is pi0.5 (transformers has no pi0.5), a model key has no openpi parameter (the
            message names them), or two model keys reduce to one name (an unknown layout).
    """
    converted = openpi_to_torch_state_dict(params, prefix="")
    if "time_mlp_in.weight" in converted:
        raise CheckpointError("this openpi checkpoint is a pi0.5 (it has time_mlp_in); transformers' PI0 is pi0 only")
    source = {canonical_name(k): v for k, v in converted.items()}
    targets: dict[str, str] = {}
    for key in model_keys:
        name = canonical_name(key)
        if name in targets:
            raise CheckpointError(f"the model's weights {targets[name]!r} and {key!r} reduce to one name {name!r}: "
                                  "an unknown PI0 layout")
        targets[name] = key
    out: dict[str, np.ndarray] = {}
    missing = []
    for name, key in targets.items():
        if name in source:
            out[key] = source[name]
        elif name in _UNREAD and hasattr(model_keys, "get"):
            out[key] = np.zeros(tuple(model_keys[key].shape), dtype=np.float32)
        else:
            missing.append(key)
    if missing:
        raise CheckpointError(f"{len(missing)} weights of the native PI0 model have no openpi parameter (the model "
                              f"would keep random values): {', '.join(sorted(missing)[:6])}")
    unplaced = sorted(n for n in set(source) - set(targets) if n not in _OPTIONAL)
    if unplaced:
        raise CheckpointError(f"{len(unplaced)} openpi parameters have no place in the native PI0 model, e.g. "
                              f"{unplaced[:3]}")
    return out


def load_openpi_params_native(model: Any, params: Mapping[str, np.ndarray]) -> None:
    """Copy openpi's flat pi0 parameters into transformers' `PI0ForConditionalGeneration` / `PI0Model`, in place.

    Every tensor keeps the model's dtype and device. The whole state dict is written (strict load): no weight keeps
    its initial random value.

    Raises:
        CheckpointError: as `openpi_to_native_state_dict`, or shapes that do not fit the model's config (the message
            names the first ones).
    """
    import torch

    own = model.state_dict()
    converted = openpi_to_native_state_dict(params, own)
    wrong = [f"{k}: model {tuple(own[k].shape)} vs checkpoint {v.shape}" for k, v in converted.items()
             if tuple(own[k].shape) != v.shape]
    if wrong:
        raise CheckpointError(f"checkpoint does not fit the model ({len(wrong)} shapes differ), e.g. {wrong[:2]}")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(own[k].dtype) for k, v in converted.items()}
    model.load_state_dict(tensors, strict=True)
