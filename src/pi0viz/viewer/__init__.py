"""The interactive viewer: one self-contained HTML page that colors pi0 attention maps in the browser.

    from pi0viz.viewer import write_viewer
    write_viewer(["call_000.npz", "call_001.npz"], "episode.html")   # then open it, or `pi0viz view --serve`

The page needs no network and no server (it works from file://); see docs/viewer.md.
"""

from __future__ import annotations

from pi0viz.viewer.build import ViewerError, scan_tree, write_viewer
from pi0viz.viewer.serve import serve_viewer

__all__ = ["ViewerError", "scan_tree", "serve_viewer", "write_viewer"]
