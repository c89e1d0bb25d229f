"""pi0viz: see where a pi0 / pi0.5 vision-language-action policy looks.

Data flows one way: capture (a backend: pi0viz.model for JAX, pi0viz.torch_capture for PyTorch) -> bundle
(pi0viz.core.bundle) -> fusion (pi0viz.core.fusion) -> rendering (pi0viz.render) / analysis -> files
(attention_viz/...), the viewer (pi0viz.viewer) and reports.

`import pi0viz` imports only numpy-level code; the render, viewer and backend entry points below load on first
use, so a PyTorch user never imports JAX and a JAX user never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from pi0viz.core.bundle import FORMAT, CaptureBundle, load_bundle, save_bundle
from pi0viz.core.layout import AttentionLayout
from pi0viz.errors import BundleError, Pi0vizError

__version__ = "0.2.0"

# name -> (module, attribute): loaded on first access
_LAZY = {
    "visualize_attention": ("pi0viz.render.visualize", "visualize_attention"),
    "render_bundle": ("pi0viz.render.engine", "render_bundle"),
    "RenderOptions": ("pi0viz.render.engine", "RenderOptions"),
    "write_viewer": ("pi0viz.viewer.build", "write_viewer"),
    "Policy": ("pi0viz.policy.jax_policy", "Policy"),  # JAX backend (extra [jax])
    "capture_attention": ("pi0viz.torch_capture", "capture_attention"),  # PyTorch backend (extra [torch])
}

__all__ = ["FORMAT", "AttentionLayout", "BundleError", "CaptureBundle", "Pi0vizError", "load_bundle", "save_bundle",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pi0viz' has no attribute {name!r}")
