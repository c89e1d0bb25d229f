"""The attention work of one inference call, run as its own Ray task off the simulator's path.

One fusion pass (pi0viz.core.fusion.fuse_call, the same numbers as the renderer and viewer) turns the call's
capture bundle into what an episode record keeps: float16 fused maps over the drawn keys and region masses.
With the call's object masks it also computes the call's grounding metrics (pi0viz.sweep.metrics_hook).
Optionally the bundle itself is saved and/or the attention_viz JPEG tree rendered (--save-bundles, --render).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pi0viz.core.bundle import CaptureBundle, save_bundle
from pi0viz.core.fusion import fuse_call
from pi0viz.errors import SelectionError
from pi0viz.sweep.metrics_hook import call_metrics
from pi0viz.sweep.plan import parse_int_list


def _positions(stored: np.ndarray, wanted: str | None, what: str) -> np.ndarray:
    """Positions in the bundle's stored steps/layers of the wanted ones ("0,9" etc.; None = all)."""
    want = parse_int_list(wanted, what)
    if want is None:
        return np.arange(len(stored))
    missing = sorted(set(want) - set(int(s) for s in stored))
    if missing:
        raise SelectionError(f"{what} {missing} not in the capture (it holds {[int(s) for s in stored]})")
    return np.flatnonzero(np.isin(stored, want))


def summarize_call(bundle: CaptureBundle, *, steps: str | None = None, layers: str | None = None,
                   bundle_path: str | None = None, render_dir: str | None = None, masks: Any = None) -> dict[str, Any]:
    """One call's part of an episode record.

    Args:
        bundle: the call's capture (B = 1).
        steps, layers: denoising steps / layers to keep (None = all stored), e.g. "9", "12-17".
        bundle_path: also save the full bundle there (.npz).
        render_dir: also render the call's attention_viz tree under this folder (one process: the sweep
            already runs many of these tasks side by side).
        masks: the call's object masks (`pi0viz.analysis.masks.CallMasks`) for its grounding metrics (None: none);
            saved next to the bundle with `bundle_path`.

    Returns:
        {"fused": float16[D', L', A, R], "region_mass": float16[D', L', A, M], "keys": int64[R],
         "region_names": str[M], "region_bounds": int32[M, 2], "images": uint8[C', h, w, 3],
         "camera_names": str[C'], "actions": float32[A, action_dims], "diffusion_times": float32[D'],
         "step_indices": int32[D'], "layer_indices": int32[L'], "token_pieces": str[R_text],
         "metrics": {name: float32 array}}
    """
    d = _positions(bundle.step_indices, steps, "--steps")
    l = _positions(bundle.layer_indices, layers, "--layers")
    attention = bundle.attention[d][:, l]
    fc = fuse_call(attention, bundle.layout, bundle.image_masks, bundle.token_mask, kind=bundle.attention_kind,
                   heads_fused=bundle.attention_heads == "max")
    cams = [i for i, on in enumerate(bundle.image_masks[0]) if on]
    text = np.flatnonzero(bundle.token_mask[0])
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
        "token_pieces": np.asarray(bundle.token_pieces[0][text], dtype=str),
        "metrics": call_metrics(bundle, masks),
    }


def _render(bundle: CaptureBundle, out_dir: str) -> None:
    from pi0viz import RenderOptions, visualize_attention

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    visualize_attention(
        bundle.attention, images=bundle.images, camera_names=bundle.camera_names, token_pieces=bundle.token_pieces,
        token_mask=bundle.token_mask, image_masks=bundle.image_masks, inference_step=int(bundle.inference_step or 0),
        out_dir=out_dir, num_state_tokens=bundle.num_state_tokens, num_action_tokens=bundle.num_action_tokens,
        attention_kind=bundle.attention_kind, attention_heads=bundle.attention_heads, patch_grid=bundle.patch_grid,
        diffusion_times=bundle.diffusion_times, step_indices=bundle.step_indices, layer_indices=bundle.layer_indices,
        options=RenderOptions(workers=1))
