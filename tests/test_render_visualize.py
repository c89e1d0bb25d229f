"""visualize_attention, the per-call entry point of a LIBERO loop, on captures reduced on the device."""

from __future__ import annotations

import numpy as np
import pytest
from render_support import block_levels, cell, decode, hot_bundle, jpgs

from pi0viz import RenderOptions, visualize_attention
from pi0viz.render.files import RenderError


def _call(attention, bundle, out, **kw):
    return visualize_attention(
        attention, images=bundle.images, camera_names=bundle.camera_names, token_pieces=bundle.token_pieces,
        token_mask=bundle.token_mask, image_masks=bundle.image_masks, inference_step=4, out_dir=out,
        options=RenderOptions(steps="3", action_tokens="17", layers="5", workers=1, alpha=1.0), **kw)


def test_heads_fused_on_device_render_the_same_hot_patch(tmp_path):
    bundle = hot_bundle(image_masks=(True, True, False))
    fused = bundle.attention.max(axis=4, keepdims=True)  # [D, L, B, 1, 1, Q, S]: CaptureOptions(fuse_heads=True)
    # Maxima are not distributions: without saying so the call is refused rather than drawn wrongly...
    with pytest.raises(RenderError, match="do not sum to 1.*attention_heads=.max."):
        _call(fused, bundle, tmp_path / "refused")
    # ...and with attention_heads="max" it draws the same fused map as the full capture.
    summary = _call(fused, bundle, tmp_path / "fused", attention_heads="max")
    full = _call(bundle.attention, bundle, tmp_path / "full")
    assert summary.files_written == full.files_written == 3  # base, left wrist, text; right wrist is masked
    for out in ("fused", "full"):
        levels = block_levels(decode(cell(tmp_path / out, 3, 17, 5, inference=4) / "fused_attention_on_base_0_rgb.jpg"))
        assert np.unravel_index(levels.argmax(), levels.shape) == (4, 11) and levels[4, 11] >= 250
    assert [p.name for p in jpgs(tmp_path / "fused")] == [p.name for p in jpgs(tmp_path / "full")]
