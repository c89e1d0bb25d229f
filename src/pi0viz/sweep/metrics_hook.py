"""HOOK for grounding metrics per call, to be filled once `pi0viz.analysis` (issue 11) is on main.

The sweep calls `call_metrics(bundle)` in the attention task of every call and stores what it returns under
"metrics/<name>" in the episode record (float32[N, ...], one row per call); `pi0viz.sweep.results` then averages
every stored metric per task and for success vs failure. Until the analysis package lands, this returns {} and
the results say so (ANALYSIS_STATUS).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from pi0viz.core.bundle import CaptureBundle


def analysis_available() -> bool:
    """True when pi0viz.analysis is importable (it is not on main yet when this hook was written)."""
    return importlib.util.find_spec("pi0viz.analysis") is not None


ANALYSIS_STATUS = ("grounding metrics: not computed; pi0viz.analysis (issue 11) was not on main when the sweep "
                   "was built. Hook: pi0viz.sweep.metrics_hook.call_metrics")


def call_metrics(bundle: CaptureBundle) -> dict[str, np.ndarray]:
    """Grounding metrics of one call, {name: float32 array}; {} until pi0viz.analysis is wired in here."""
    return {}
