"""Rendering: fused attention -> colored panels -> the attention_viz tree of JPEGs.

    colormap.py  colormaps as 256-row lookup tables
    glyphs.py    fonts rasterized once; a monospace atlas for per-cell numbers
    panels.py    camera overlays, the prompt's token map, captions
    files.py     the tree's paths, safe names, atomic writes, selections
    engine.py    prepare a call once, then paint/encode/write cells in parallel
    decode.py    a pi0-FAST (decoding) call: decode_step_J/layer_L cells
    cli.py       `pi0viz render`
"""

from pi0viz.core.colormap import DEFAULT_COLORMAP, colormap_lut
from pi0viz.render.engine import RenderJob, RenderOptions, RenderSummary, render_bundle, run_job
from pi0viz.render.decode import render_decode_bundle
from pi0viz.core.selection import parse_selection  # the one selection grammar, re-exported
from pi0viz.render.files import RenderError, safe_names
from pi0viz.render.panels import TextLayout, layout_prompt

__all__ = [
    "DEFAULT_COLORMAP",
    "RenderError",
    "RenderJob",
    "RenderOptions",
    "RenderSummary",
    "TextLayout",
    "colormap_lut",
    "layout_prompt",
    "parse_selection",
    "render_bundle",
    "render_decode_bundle",
    "run_job",
    "safe_names",
]
