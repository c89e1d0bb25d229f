"""The prefix's own attention of one call (PaliGemma's image and prompt tokens reading each other) as a
`pi0viz.prefix/1` side file (`pi0viz.core.prefix_bundle`), captured by the JAX sampler's `CaptureOptions(prefix=True)`
(the same softmax that makes the actions; the action tokens' capture is unchanged)."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from pi0viz.core.capture_options import CaptureOptions
from pi0viz.core.prefix_bundle import PrefixAttention, prefix_blocks
from pi0viz.model.pi0 import sample_actions

# Heads fused by max and float16 on the device: [L, 1, 1, 1, P, P] (pi0: 18 x 816^2 x 2 bytes = 24 MB).
PREFIX_CAPTURE = CaptureOptions(action_rows_only=True, prefix_keys_only=True, fuse_heads=True, dtype="float16",
                                prefix=True)


def capture_prefix(policy: Any, inputs: Any, *, noise: np.ndarray | None = None,
                   inference_step: int | None = None) -> PrefixAttention:
    """Run the unmodified call on prepared inputs (`policy.prepare(obs)`) and keep its prefix attention.

    Args:
        policy: a pi0viz JAX `Policy`.
        inputs: `PolicyInputs` (images uint8, tokens, normalized state).
        noise: float32[A, action_dim] (default zeros: the prefix pass does not depend on it).
    Returns:
        PrefixAttention with every layer (L = the model's depth).
    """
    from pi0viz.policy.jax_policy import to_observation

    cfg = policy.config
    if noise is None:
        noise = np.zeros((cfg.action_horizon, cfg.action_dim), np.float32)
    out = sample_actions(policy.params, cfg, jax.random.key(0), to_observation(inputs), num_steps=policy.num_steps,
                         noise=np.asarray(noise, np.float32)[None], capture=PREFIX_CAPTURE)
    att = np.asarray(jax.device_get(out.prefix_attention))[:, 0, 0, 0]  # [L, P, P]
    side = math.isqrt(cfg.num_image_tokens)
    cams = list(cfg.image_keys)
    return PrefixAttention(
        camera_names=cams, images=np.stack([inputs.images[c] for c in cams]).astype(np.uint8),
        image_masks=np.asarray([inputs.image_masks[c] for c in cams], bool),
        token_pieces=policy.tokenizer.pieces(inputs.token_ids, inputs.token_mask),
        token_mask=np.asarray(inputs.token_mask, bool), patch_grid=(side, side),
        layer_indices=np.arange(cfg.llm.depth, dtype=np.int32),
        **prefix_blocks(att, len(cams), cfg.num_image_tokens), prompt=str(inputs.prompt),
        inference_step=inference_step)
