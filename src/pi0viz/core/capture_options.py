"""What a capture keeps of an inference call's attention: the one `CaptureOptions` every backend takes.

The JAX model (`pi0viz.model.sample_actions`), the PyTorch hooks (`pi0viz.torch_capture.capture_attention`) and the
policy server all read these options; they live here, framework-free, so that choosing them imports no backend.
Full action-expert attention is `[D, L, B, K, G, Q, S]` (pi0: Q = 51, S = 867; pi0.5 LIBERO: Q = 10, S = 978); each
reduction shrinks one axis, on the model's device, before anything is copied to the host.
"""

from __future__ import annotations

import dataclasses

from pi0viz.errors import CaptureError

DTYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """Reductions (and extras) of one capture. Frozen and hashable: the JAX model jits on it.

    Attributes:
        action_rows_only: Q = the action tokens only (drops pi0's state-token row: 51 -> 50; pi0.5: no-op).
        prefix_keys_only: S = camera + prompt keys only (drops state/action keys): pi0 867 -> 816, pi0.5 -> 968.
        fuse_heads: max over the query heads on the device: K = G = 1 (8x smaller).
        dtype: "float32" or "float16" (2x smaller).
        logits: also return the masked, scaled pre-softmax scores (same shape; masked = -2.38e38). JAX only.
        prefix: also return the prefix-pass attention `[L, B, K, G, P, P]` (fuse_heads/dtype apply); the PyTorch
            capture keeps it as `[L, B, P, P]`, max over heads (dtype applies; `cap.prefix()`).
    """

    action_rows_only: bool = False
    prefix_keys_only: bool = False
    fuse_heads: bool = False
    dtype: str = "float32"
    logits: bool = False
    prefix: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise CaptureError(f"CaptureOptions.dtype must be 'float32' or 'float16', got {self.dtype!r}")
