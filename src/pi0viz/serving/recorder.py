"""Server-side recording: every call's capture bundle (and optionally its attention_viz tree) written where the
server runs, so an unmodified openpi client (e.g. openpi's LIBERO example in its Python 3.8 environment, where
pi0viz cannot be installed) gets pi0viz's attention with no change on the client side.

Layout under the record folder:
    bundles/call_NNNNN.npz            one capture bundle per call, in arrival order (attention float16)
    attention_viz/inference_timestep_N/...   with tree=True: the rendered tree of each call (N = call index)
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.writes import make_folder


class CallRecorder:
    """Writes each call's bundle to `<folder>/bundles/call_NNNNN.npz`, numbering calls from 0 across connections.

    Args:
        folder: the record folder (created; an operator's path, never one taken from a request).
        tree: also render each call's attention_viz tree under `<folder>/attention_viz` (slow at full size:
            one pi0 call is 36,000 JPEG files; the next call waits for it).
        workers: render processes for the tree (None: all cores).
    """

    def __init__(self, folder: str | Path, *, tree: bool = False, workers: int | None = None) -> None:
        self.folder = Path(folder)
        self.tree = tree
        self.workers = workers
        self._lock = threading.Lock()
        make_folder(self.folder / "bundles", "choose another record folder")
        existing = sorted((self.folder / "bundles").glob("call_*.npz"))
        # A restarted server continues the numbering instead of overwriting an earlier run's calls.
        self._next = 1 + max((int(p.stem.split("_")[1]) for p in existing if p.stem.split("_")[1].isdigit()),
                             default=-1)

    def next_index(self) -> int:
        """Reserve the next call number (thread-safe)."""
        with self._lock:
            index, self._next = self._next, self._next + 1
        return index

    def record(self, bundle: CaptureBundle, index: int) -> Path:
        """Save one call's bundle (probabilities as float16: half the size, ~3 significant digits), render its
        tree when asked. Returns the bundle path."""
        if bundle.attention_kind == "probs" and bundle.attention.dtype != np.float16:
            bundle = dataclasses.replace(bundle, attention=bundle.attention.astype(np.float16))
        path = save_bundle(bundle, self.folder / "bundles" / f"call_{index:05d}.npz")  # atomic; OutputError
        if self.tree:
            from pi0viz.render import RenderJob, RenderOptions, run_job

            run_job(RenderJob(bundle, str(self.folder / "attention_viz"), index, RenderOptions(workers=self.workers)))
        return path
