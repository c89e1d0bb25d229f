"""The attention work of one inference call, run as its own Ray task off the simulator's path.

One fusion pass (pi0viz.core.maps.fused_maps, the same numbers and cameras as the renderer and viewer) turns the call's
capture bundle into what an episode record keeps: float16 fused maps over the drawn keys and region masses.
With the call's object masks it also computes the call's grounding metrics (pi0viz.sweep.metrics_hook).
Optionally the bundle itself is saved and/or the attention_viz JPEG tree rendered (--save-bundles, --render).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.maps import fused_maps
from pi0viz.core.selection import parse_selection
from pi0viz.sweep.metrics_hook import call_metrics


def _positions(stored: np.ndarray, wanted: str | None, what: str) -> np.ndarray:
    """Positions in the bundle's stored steps/layers of the wanted ones ("0,9", "12-17"; None = all)."""
    want = parse_selection(wanted, [int(s) for s in stored], what)  # SelectionError, one line
    return np.flatnonzero(np.isin(stored, want))


def summarize_call(bundle: CaptureBundle, *, steps: str | None = None, layers: str | None = None,
                   bundle_path: str | None = None, render_dir: str | None = None, masks: Any = None,
                  other_masks: Any = None, other_prefix: str = "others.") -> dict[str, Any]:
    """One call's part of an episode record.

    Args:
        bundle: the call's capture (B = 1).
        steps, layers: denoising steps / layers to keep (None = all stored), e.g. "9", "12-17".
        bundle_path: also save the full bundle there (.npz).
        render_dir: also render the call's attention_viz tree under this folder (one process: the sweep
            already runs many of these tasks side by side).
        masks: the call's object masks (`pi0viz.analysis.masks.CallMasks`) for its grounding metrics (None: none);
            saved next to the bundle with `bundle_path`.
        other_masks: a second set of masks (the reach suite: the objects other than the named one) whose metrics
            are stored too, each name prefixed with `other_prefix`.

    Returns:
        {"fused": float16[D', L', A, R], "region_mass": float16[D', L', A, M], "keys": int64[R],
         "region_names": str[M], "region_bounds": int32[M, 2], "images": uint8[C', h, w, 3],
         "camera_names": str[C'], "actions": float32[A, action_dims], "diffusion_times": float32[D'],
         "step_indices": int32[D'], "layer_indices": int32[L'], "token_pieces": str[R_text],
         "metrics": {name: float32 array}}
    """
    d = _positions(bundle.step_indices, steps, "--steps")
    l = _positions(bundle.layer_indices, layers, "--layers")
    fc = fused_maps(bundle, step_pos=d, layer_pos=l)  # the camera rule: padded or silent cameras are left out
    cams = fc.cameras
    if bundle_path is not None:
        save_bundle(bundle, bundle_path)
        if masks is not None:
            from pi0viz.analysis.masks import masks_path, save_masks

            save_masks(masks, masks_path(bundle_path))
    if render_dir is not None:
        _render(bundle, render_dir)
    return {
        "fused": fc.fused.astype(np.float16),
        "region_mass": fc.region_mass.astype(np.float16),
        "keys": fc.keys,
        "region_names": np.asarray([name for name, _, _ in fc.regions], dtype=str),
        "region_bounds": np.asarray([(s, e) for _, s, e in fc.regions], dtype=np.int32).reshape(-1, 2),
        "images": bundle.images[0, cams],
        "camera_names": np.asarray([bundle.camera_names[i] for i in cams], dtype=str),
        "actions": (bundle.actions[0] if bundle.actions is not None else np.zeros((0, 0))).astype(np.float32),
        "diffusion_times": bundle.diffusion_times[d].astype(np.float32),
        "step_indices": np.asarray(bundle.step_indices)[d].astype(np.int32),
        "layer_indices": np.asarray(bundle.layer_indices)[l].astype(np.int32),
        "token_pieces": np.asarray(fc.text_pieces, dtype=str).reshape(-1),
        "metrics": dict(call_metrics(bundle, masks),
                        **{other_prefix + k: v for k, v in call_metrics(bundle, other_masks).items()}),
    }


def _render(bundle: CaptureBundle, out_dir: str) -> None:
    from pi0viz.render.engine import RenderOptions
    from pi0viz.render.visualize import visualize_attention

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    # The whole bundle (reduced captures included), not a rebuild from some of its fields.
    visualize_attention(bundle, inference_step=int(bundle.inference_step or 0), out_dir=out_dir,
                        options=RenderOptions(workers=1))
