"""PyTorch capture for LeRobot's PI0Policy / PI05Policy, openpi's PyTorch pi0 and transformers' own
PI0ForConditionalGeneration (native.py) (extra [torch]; imports no JAX).

    from pi0viz.torch_capture import CaptureOptions, capture_attention

    with capture_attention(policy, CaptureOptions(fuse_heads=True)) as cap:
        action = policy.select_action(batch)
    pi0viz.save_bundle(cap.bundle(tokenizer=tok), "call.npz")

`CaptureOptions(prefix=True)` also keeps PaliGemma's prefix-pass attention (`cap.prefix()`: a `pi0viz.prefix/1`
PrefixAttention; LeRobot / openpi's port), and `knock_out_keys(policy, keys, where=..., layers=...)` removes prefix
keys from chosen queries for a block (knockout.py).

`openpi_to_torch_state_dict` (numpy only) and `load_openpi_params` put openpi JAX checkpoints into these models;
`load_openpi_params_native` into transformers' PI0 (names from its own state dict).
"""

from pi0viz.errors import CaptureError, CompiledModelError
from pi0viz.torch_capture.bundle import pipeline_tokenizer
from pi0viz.torch_capture.capture import (
    AttentionCapture,
    CaptureOptions,
    capture_attention,
)
from pi0viz.torch_capture.convert import openpi_to_torch_state_dict
from pi0viz.torch_capture.convert_native import load_openpi_params_native, openpi_to_native_state_dict
from pi0viz.torch_capture.knockout import knock_out_keys
from pi0viz.torch_capture.model_parts import check_not_compiled
from pi0viz.torch_capture.weights import load_openpi_params

__all__ = [
    "AttentionCapture",
    "CaptureError",
    "CaptureOptions",
    "CompiledModelError",
    "capture_attention",
    "check_not_compiled",
    "knock_out_keys",
    "load_openpi_params",
    "load_openpi_params_native",
    "openpi_to_native_state_dict",
    "openpi_to_torch_state_dict",
    "pipeline_tokenizer",
]
