"""Capture the action expert's attention from an unmodified PyTorch pi0 / pi0.5 with forward hooks.

    with capture_attention(policy, CaptureOptions(fuse_heads=True, dtype="float16")) as cap:
        action = policy.select_action(batch)
    bundle = cap.bundle(tokenizer=tokenizer)          # one CaptureBundle per inference call the block ran

Hooks (removed on exit, also when the block raises):
- SigLIP's forward pre-hook: each call is one camera's pixels; the first after any expert call opens a new
  inference call (a `select_action` served from LeRobot's action queue runs none).
- the prompt embedding's pre-hook: the token ids.
- each expert `self_attn` forward hook: the post-softmax weights [B, N, Q, S] of one (step, layer). Calls come
  in the order step 0 layer 0..L-1, step 1 layer 0..L-1, ...; call c is step c // L, layer c % L, and a call whose
  module is not layer c % L stops the capture. The reductions run right there, on the model's device; only the
  reduced tensor is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pi0viz.core.capture_options import CaptureOptions  # the same options as the JAX model's
from pi0viz.errors import CaptureError
from pi0viz.torch_capture import native  # transformers' own PI0: its own layout (native.py)
from pi0viz.torch_capture.model_parts import find_parts
from pi0viz.torch_capture.recording import AttentionCapture

__all__ = ["AttentionCapture", "capture_attention"]


def _refuse_pi0_fast(model: Any) -> None:
    """LeRobot's PI0FastPolicy / PI0FastPytorch: one PaliGemma that decodes tokens, no action expert to hook."""
    core = model.model if hasattr(getattr(model, "model", None), "paligemma_with_expert") else model
    pwe = getattr(core, "paligemma_with_expert", None)
    if pwe is not None and not hasattr(pwe, "gemma_expert"):
        raise CaptureError(f"{type(model).__name__} is pi0-FAST (one PaliGemma decoding action tokens, no action "
                           "expert): the PyTorch capture hooks pi0 / pi0.5's expert; capture pi0-FAST with pi0viz's "
                           "JAX model from an openpi checkpoint (pi0viz serve --config pi0_fast_libero, docs/torch.md)")


@contextlib.contextmanager
def capture_attention(model: Any, options: CaptureOptions | None = None) -> Iterator[AttentionCapture]:
    """Hook an unmodified LeRobot PI0Policy / PI05Policy, openpi's PI0Pytorch or transformers' own
    PI0ForConditionalGeneration / PI0Model (native.py: its expert runs eager attention inside the block) for the
    duration of a block.

    Args:
        model: the policy or its core model, uncompiled, in eval mode.
        options: reductions applied on the device (default: the full attention, float32).

    Yields:
        AttentionCapture; after the block, `cap.bundle()` is the last inference call as a CaptureBundle and
        `cap.attention()` its attention [D, L, B, K, G, Q, S]; with `options.prefix` `cap.prefix()` its prefix's own
        attention as a PrefixAttention and `cap.prefix_attention()` float[L, B, P, P].

    Raises:
        CompiledModelError: the model or its sampler is compiled (hooks would never fire).
        CaptureError: unknown model layout, the expert did not return weights, or options this backend cannot
            honour (logits).
    """
    options = options or CaptureOptions()
    if options.logits:  # the hooks see post-softmax attention only
        raise CaptureError("the PyTorch capture keeps attention probabilities only: CaptureOptions(logits=True) "
                           "needs pi0viz's JAX model")
    if native.is_native_pi0(model):
        with native.capture_native(model, options) as capture:
            yield capture
        return
    _refuse_pi0_fast(model)
    parts = find_parts(model)
    capture = AttentionCapture(parts, options)
    handles = capture.attach()
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
