"""Summary maps and the episode strip: planted hot spots land where they must in the JPEGs; the tree is untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bundle_support import small
from render_support import GRID, PATCH_PX, block_levels, decode

from pi0viz.analysis.summaries import (
    parse_summaries,
    reduce_call,
    write_call_summaries,
    write_episode_strip,
)
from pi0viz.core import fusion
from pi0viz.core.synthetic import place_hot_key
from pi0viz.errors import AnalysisError

HOT = (4, 11)


def hot_everywhere_in(bundle, step: int, layer: int, mass: float = 0.5) -> None:
    """Every head of every action token of (step, layer) puts `mass` on base patch HOT."""
    key = bundle.layout.camera_region(0).start + HOT[0] * GRID + HOT[1]
    for a in range(bundle.num_action_tokens):
        for head in range(8):
            place_hot_key(bundle, step=step, layer=layer, action_token=a, head=head, key=key, mass=mass)


def test_summaries_put_the_hot_patch_on_top_and_leave_the_tree_alone(tmp_path: Path) -> None:
    b = small()
    hot_everywhere_in(b, step=1, layer=2)
    results = write_call_summaries(b, tmp_path, inference_step=7, alpha=1.0)  # pure heat map: colors = levels
    root = tmp_path / "inference_timestep_7"
    assert sorted(p.name for p in root.iterdir()) == ["summary"]  # nothing outside summary/
    assert [r.name for r in results] == ["mean_over_action_tokens", "mean_over_action_tokens_steps",
                                         "mean_over_action_tokens_layers_steps"]
    per_cell = root / "summary" / "mean_over_action_tokens"
    assert len(list(per_cell.glob("diffusion_timestep_*/layer_*"))) == 2 * 3
    hot = block_levels(decode(per_cell / "diffusion_timestep_1" / "layer_2" / "fused_attention_on_base_0_rgb.jpg"))
    assert np.unravel_index(hot.argmax(), hot.shape) == HOT and hot[HOT] >= 250
    cold = block_levels(decode(per_cell / "diffusion_timestep_0" / "layer_2" / "fused_attention_on_base_0_rgb.jpg"))
    assert cold[HOT] < 250 or np.unravel_index(cold.argmax(), cold.shape) != HOT  # no hot spot in step 0
    whole = root / "summary" / "mean_over_action_tokens_layers_steps"
    levels = block_levels(decode(whole / "fused_attention_on_base_0_rgb.jpg"))
    assert np.unravel_index(levels.argmax(), levels.shape) == HOT  # 1 of 6 cells, still far above the rest
    assert (whole / "fused_attention_on_text.jpg").is_file()
    per_layer = root / "summary" / "mean_over_action_tokens_steps"
    assert sorted(p.name for p in per_layer.iterdir()) == ["layer_0", "layer_1", "layer_2"]


def test_mean_and_max_reductions_have_the_planted_values() -> None:
    b = small()
    key = b.layout.camera_region(0).start + HOT[0] * GRID + HOT[1]
    for head in range(8):
        place_hot_key(b, step=0, layer=1, action_token=2, head=head, key=key, mass=0.9)
    call = fusion.fuse_call(b.attention, b.layout, b.image_masks, b.token_mask)
    r = int(np.flatnonzero(call.keys == key)[0])
    top = reduce_call(call, ("action_tokens",), "max")
    mean = reduce_call(call, ("action_tokens",), "mean")
    assert top.maps.shape == (2, 3, 1, call.fused.shape[-1]) and top.name == "max_over_action_tokens"
    assert top.maps[0, 1, 0, r] == pytest.approx(0.9, abs=1e-6)
    assert mean.maps[0, 1, 0, r] == pytest.approx(call.fused[0, 1, :, r].mean(), rel=1e-6)
    assert mean.maps[0, 1, 0, r] == pytest.approx((0.9 + 4 * call.fused[0, 1, 0, r]) / 5, rel=0.05)


def test_episode_strip_compares_calls_on_one_scale(tmp_path: Path) -> None:
    calls = []
    for n in range(2):
        b = small(seed=n)
        b.inference_step = n
        if n == 1:
            hot_everywhere_in(b, step=0, layer=0, mass=0.9)
        call = fusion.fuse_call(b.attention, b.layout, b.image_masks, b.token_mask)
        calls.append((n, reduce_call(call, ("steps", "layers", "action_tokens")), b))
    strip = decode(write_episode_strip(calls, tmp_path / "episode_summary.jpg", alpha=1.0))
    tile_w = GRID * PATCH_PX
    tile_h = strip.shape[0] // 3  # three cameras, one row each
    first, second = (block_levels(strip[:tile_h, k * tile_w:(k + 1) * tile_w]) for k in range(2))
    assert np.unravel_index(second.argmax(), second.shape) == HOT and second[HOT] >= 250
    assert first.max() < 30  # call 0 has no hot spot: cold on the strip's shared scale


def test_bad_summary_names_are_refused() -> None:
    assert parse_summaries("action_tokens+steps") == [("steps", "action_tokens")]
    with pytest.raises(AnalysisError, match="unknown summary axes"):
        parse_summaries("tokens")
