"""`pi0viz render --exclude-sinks`: a planted sink (0.6 of every row) no longer sets the color scale, so a planted hot
patch (0.1) becomes the top color; the sink is outlined and the caption says so. Read back from the JPEGs."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from render_support import GRID, PATCH_PX, block_levels, cell, decode

from pi0viz.cli import main
from pi0viz.core.bundle import save_bundle
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle

HOT = (4, 11)  # base camera patch
CELL = {"step": 1, "layer": 2, "action_token": 3}


def sink_bundle():
    b = synthetic_bundle(num_steps=2, num_layers=3, num_action_tokens=5)
    bos = b.layout.text_region.start
    q = b.layout.action_queries()
    att = b.attention[:, :, :, :, :, q].astype(np.float64)  # every action row of every head
    att[..., bos] = 0
    att *= 0.4 / att.sum(-1, keepdims=True)
    att[..., bos] = 0.6
    b.attention[:, :, :, :, :, q] = att.astype(np.float32)
    for head in range(8):
        place_hot_key(b, **CELL, head=head, key=b.layout.camera_region(0).start + HOT[0] * GRID + HOT[1], mass=0.1)
    return b


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sinks")
    path = save_bundle(sink_bundle(), root / "call.npz")
    out = {}
    for name, extra in (("plain", []), ("excluded", ["--exclude-sinks"])):
        result = CliRunner().invoke(main, ["render", str(path), "--out", str(root / name), "--steps", "1",
                                           "--layers", "2", "--action-tokens", "3", "--alpha", "1", "--workers", "1",
                                           "--no-progress", *extra])
        assert result.exit_code == 0, result.output
        out[name] = (cell(root / name, 1, 3, 2), result.output)
    return out


def test_hot_patch_is_the_top_color_once_sinks_are_excluded(renders) -> None:
    plain = block_levels(decode(renders["plain"][0] / "fused_attention_on_base_0_rgb.jpg"))
    excluded = block_levels(decode(renders["excluded"][0] / "fused_attention_on_base_0_rgb.jpg"))
    assert plain[HOT] < 60  # 0.1 under a scale topped by the sink's ~0.54: a dim patch
    assert np.unravel_index(excluded.argmax(), excluded.shape) == HOT
    assert excluded[HOT] >= 250  # the top color
    others = np.delete(excluded.reshape(-1), HOT[0] * GRID + HOT[1])
    assert others.max() <= 15


def test_sink_token_is_clipped_outlined_and_the_caption_says_so(renders) -> None:
    folder, output = renders["excluded"]
    text = decode(folder / "fused_attention_on_text.jpg").astype(int)
    plain = decode(renders["plain"][0] / "fused_attention_on_text.jpg").astype(int)
    # The BOS box is the first token box, its top edge at y = 4 (the margin). The sink is clipped at the top color
    # (pale yellow, red ~250) and outlined in cyan (red 0; JPEG's 4:2:0 chroma blurs a 1 px line, so red drops
    # to ~100 rather than 0). Without --exclude-sinks BOS is the top of the scale anyway but has no outline.
    assert text[4, 6:10, 0].mean() < 150 and text[4, 6:10, 1].mean() > 200
    assert plain[4, 6:10, 0].mean() > 230
    assert text[7, 6:10, 0].mean() > 200  # inside the box: the clipped top color
    # The caption's title line reads "base_0_rgb (scale w/o sinks)": more ink than the plain "base_0_rgb".
    def title_ink(path) -> int:
        title = decode(path)[GRID * PATCH_PX + 2: GRID * PATCH_PX + 14]  # the first caption line
        return int((title.max(axis=-1) < 100).sum())

    ink = title_ink(folder / "fused_attention_on_base_0_rgb.jpg")
    assert ink > 1.8 * title_ink(renders["plain"][0] / "fused_attention_on_base_0_rgb.jpg")
    assert "--exclude-sinks" in output and "(step, layer) cells have sinks" in output
