"""pi0viz: see where a pi0 vision-language-action policy looks.

Data flows one way: capture (pi0viz.model) -> bundle (pi0viz.bundle) -> fusion (pi0viz.fusion)
-> rendering (pi0viz.render) -> files (attention_viz/...) and the viewer (pi0viz.viewer).
Heavy modules (JAX) are imported lazily, so `import pi0viz` stays cheap.
"""

from __future__ import annotations

from typing import Any

from pi0viz.bundle import FORMAT, BundleError, CaptureBundle, load_bundle, save_bundle
from pi0viz.layout import AttentionLayout

__version__ = "0.1.0"

__all__ = [
    "FORMAT",
    "AttentionLayout",
    "BundleError",
    "CaptureBundle",
    "load_bundle",
    "save_bundle",
    "visualize_attention",
    "write_viewer",
]


def __getattr__(name: str) -> Any:
    if name == "visualize_attention":
        from pi0viz.visualize import visualize_attention

        return visualize_attention
    if name == "write_viewer":
        from pi0viz.viewer import write_viewer

        return write_viewer
    raise AttributeError(f"module 'pi0viz' has no attribute {name!r}")
