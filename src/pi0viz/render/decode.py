"""Render one pi0-FAST (decoding) call as the attention_viz tree, next to the pi0 one:

    {out}/inference_timestep_N/decode_step_J/layer_L/fused_attention_on_{camera}.jpg
                                                    /fused_attention_on_text.jpg
                                                    /fused_attention_on_generated.jpg

Each cell is decode step J's query (the generated token J) in layer L, fused over heads by max
(pi0viz.core.maps.decode_maps). The generated map shows the tokens generated up to and including J (written only
when the capture kept the generated tokens' keys). The color scale is pi0's (pi0viz.core.fusion.ColorScale): by
default one per cell, shared by every panel (its top: the cell's largest fused value on a drawn key); region, layer
and global scopes, percentile, gamma and log scales as for pi0, the generated tokens being one more region.
Captions name the call, the decode step, the generated token (id and text) and the layer. The pi0 tree
(render_bundle) is untouched; this renders in one process (a call is J x L cells).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import simplejpeg

from pi0viz.core.colormap import colormap_lut, readable_ink
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.fusion import scale_tops, to_levels
from pi0viz.core.images import resize_with_pad
from pi0viz.core.maps import decode_maps
from pi0viz.core.selection import folder_index, parse_selection
from pi0viz.core.writes import make_folder
from pi0viz.errors import BundleError, FusionError
from pi0viz.render.engine import DEFAULT_QUALITY, MODEL_PATCH_PX, RenderJob, RenderOptions, RenderSummary
from pi0viz.render.files import (
    RESUME_HINT,
    RenderError,
    decode_cell_dir,
    inference_dir,
    is_complete_jpeg,
    make_cell_folder,
    remove_stale_temps,
    safe_names,
    write_atomic_in,
)
from pi0viz.render.glyphs import GlyphAtlas
from pi0viz.render.panels import LABEL_CHARS, CameraPainter, Caption, TextPainter, as_rgbx, display_piece, layout_prompt

GENERATED_FILE = "generated"  # fused_attention_on_generated.jpg: the map over the tokens generated so far


def token_label(step: int, token_id: int, piece: str | None) -> str:
    """The caption's name of decode step `step`'s query, the token generated at that step: 'token 5 id 257012
    "abc"', or 'token 5 id 257012' when the bundle carries no text for the generated tokens."""
    text = f' "{display_piece(piece)}"' if piece is not None else ""
    return f"token {step} id {token_id}{text}"


def render_decode_bundle(bundle: DecodeBundle, out_dir: str | os.PathLike = "attention_viz",
                         options: RenderOptions | None = None, *, inference_step: int | None = None,
                         progress: Callable[[int], None] | None = None) -> RenderSummary:
    """Render a decoding bundle (pi0-FAST) as the decode_step_J/layer_L tree under {out_dir}/inference_timestep_N.

    Args:
        bundle: the call (pi0viz.core.decode_bundle.DecodeBundle).
        out_dir: root of the tree.
        options: RenderOptions; `steps` selects decode steps, `layers`, `cameras`, `scale`, `colormap`, `zoom`,
            `upsample`, `alpha`, `quality`, `resume` and `batch_index` apply as for pi0; action tokens, per-head
            panels, composites, sinks and workers are pi0's only (ignored here; `pi0viz render` refuses them).
        inference_step: N in the path; default the bundle's inference_step, else 0.
        progress: called with the number of files finished as cells complete.
    """
    if not isinstance(bundle, DecodeBundle):
        raise BundleError(f"bundle must be a DecodeBundle (load a saved one with "
                          f"pi0viz.core.decode_bundle.load_decode_bundle), got {type(bundle).__name__}")
    options = options or RenderOptions()
    if not isinstance(options, RenderOptions):
        raise RenderError(f"options must be a pi0viz.render.RenderOptions, got {type(options).__name__}")
    options.validate()
    t0 = time.perf_counter()
    b = options.batch_index
    if not 0 <= b < bundle.batch_size:
        raise RenderError(f"batch_index {b} out of range: this capture has batch size {bundle.batch_size}")
    call = folder_index(inference_step if inference_step is not None else (bundle.inference_step or 0),
                        "the inference step (inference_step)", RenderError)
    step_labels = [int(s) for s in bundle.step_indices]
    layer_labels = [int(s) for s in bundle.layer_indices]
    steps = parse_selection(options.steps, step_labels, "decode steps")
    layers = parse_selection(options.layers, layer_labels, "layers")
    step_pos = [step_labels.index(s) for s in steps]
    layer_pos = [layer_labels.index(s) for s in layers]
    wanted = RenderJob._select_cameras(bundle.camera_names, options.cameras)  # pi0's camera selection
    try:
        maps = decode_maps(bundle, batch_index=b, step_pos=step_pos, layer_pos=layer_pos)
    except FusionError as err:
        raise RenderError(str(err)) from None
    notes = maps.drawn.notes(among=wanted)
    keep = [i for i, c in enumerate(maps.drawn.cameras) if c in wanted]  # positions among the drawn cameras

    lut = colormap_lut(options.colormap)
    zoom = int(options.zoom)
    atlas = GlyphAtlas(11 * zoom)
    rows, cols = bundle.patch_grid
    want_h, want_w = rows * MODEL_PATCH_PX, cols * MODEL_PATCH_PX
    file_names = safe_names(bundle.camera_names, reserved=("text", GENERATED_FILE))
    panels: list[tuple[str, CameraPainter | TextPainter, Caption, int]] = []  # (file name, painter, caption, region)
    for i in keep:
        c = maps.drawn.cameras[i]
        image = bundle.images[b, c]
        if image.shape[:2] != (want_h, want_w):
            image = resize_with_pad(image, want_h, want_w)
        painter = CameraPainter(image, bundle.patch_grid, lut, zoom=zoom, alpha=options.alpha,
                                upsample=options.upsample)
        panels.append((file_names[c], painter, Caption(bundle.camera_names[c], painter.shape[1], lut, atlas, zoom), i))
    width = 2 * want_w * zoom
    text = TextPainter(layout_prompt(list(bundle.token_pieces[b]), list(bundle.token_mask[b]), width=width, zoom=zoom),
                       lut, readable_ink(lut))
    panels.append(("text", text, Caption("prompt", width, lut, atlas, zoom), len(maps.regions) - 1))
    gen_caption = Caption("generated tokens (so far)", width, lut, atlas, zoom) if maps.has_generated else None
    gen_painters: dict[int, TextPainter] = {}
    pieces = maps.generated_pieces
    if not maps.has_generated:
        notes.append("the capture kept prefix keys only: no fused_attention_on_generated.jpg")

    # pi0's color scale over the drawn keys and, as one more region, the generated tokens: [J', L', 1, R + Jg]
    # (the action-token axis of core.fusion is 1 here). Default: one top per cell shared by every panel.
    R = maps.fused.shape[-1]
    values = np.concatenate([maps.fused, maps.generated], axis=-1)[:, :, None, :]
    regions = [*maps.regions, (GENERATED_FILE, R, values.shape[-1])]
    region_tops = scale_tops(values, regions, options.scale)  # [J', L', 1, M' + 1]
    all_levels = to_levels(values, region_tops, regions, options.scale)[:, :, 0]  # [J', L', R + Jg]
    levels, gen_levels = all_levels[..., :R], all_levels[..., R:]
    region_tops = region_tops[:, :, 0]

    out_root = inference_dir(os.fspath(out_dir), call)
    make_folder(out_root, RESUME_HINT)
    names = [f"fused_attention_on_{p[0]}.jpg" for p in panels]
    if maps.has_generated:
        names.append(f"fused_attention_on_{GENERATED_FILE}.jpg")
    written = skipped = nbytes = 0
    for d, s in enumerate(maps.step_labels.tolist()):
        piece = pieces[s] if bundle.generated_pieces is not None and s < len(pieces) else None
        token_id = int(maps.generated_ids[s]) if s < len(maps.generated_ids) else -1
        for l, layer in enumerate(maps.layer_labels.tolist()):
            folder = decode_cell_dir(out_root, s, layer)
            if options.resume:
                remove_stale_temps(folder)
                if all(is_complete_jpeg(os.path.join(folder, n)) for n in names):
                    skipped += len(names)
                    if progress:
                        progress(len(names))
                    continue
            make_cell_folder(folder)
            label = [(3, 0, panels[0][2].strip(f"call {call}  decode {s}", LABEL_CHARS)),
                     (4, 0, panels[0][2].strip(f"{token_label(s, token_id, piece)}  layer {layer}", 2 * LABEL_CHARS))]
            images = []
            for _, painter, caption, n in panels:
                _, start, stop = maps.regions[n]
                images.append(_panel(painter, caption, levels[d, l, start:stop],
                                     float(maps.fused[d, l, start:stop].max(initial=0.0)),
                                     float(maps.region_mass[d, l, n]), float(region_tops[d, l, n]), label))
            if gen_caption is not None:
                painter = gen_painters.get(s)
                if painter is None:
                    shown = [k <= s for k in range(len(pieces))]
                    painter = gen_painters[s] = TextPainter(layout_prompt(pieces, shown, width=width, zoom=zoom),
                                                            lut, readable_ink(lut))
                generated = maps.generated[d, l, :s + 1]
                images.append(_panel(painter, gen_caption, gen_levels[d, l, :s + 1], float(generated.max(initial=0.0)),
                                     float(maps.region_mass[d, l, -1]), float(region_tops[d, l, -1]), label))
            for name, image in zip(names, images):
                data = simplejpeg.encode_jpeg(as_rgbx(image), quality=options.quality or DEFAULT_QUALITY,
                                              colorspace="RGBX", colorsubsampling="420")
                write_atomic_in(folder, name, data)
                written += 1
                nbytes += len(data)
            if progress:
                progress(len(images))
    return RenderSummary(out_dir=out_root, files_written=written, files_skipped=skipped,
                         cells=len(step_pos) * len(layer_pos), bytes_written=nbytes,
                         seconds=time.perf_counter() - t0, workers=1, notes=notes)


def _panel(painter: CameraPainter | TextPainter, caption: Caption, levels: np.ndarray, peak: float, mass: float,
           top: float, label: list) -> np.ndarray:
    """One panel (map above, caption below) as uint32[h, w] RGBX."""
    split = painter.shape[0] if isinstance(painter, CameraPainter) else painter.layout.height
    width = painter.shape[1] if isinstance(painter, CameraPainter) else painter.layout.width
    out = np.empty((split + caption.height, width), np.uint32)
    painter.draw(np.ascontiguousarray(levels), out[:split])
    caption.draw(out[split:], peak=peak, mass=mass, top=top, label=label)
    return out

