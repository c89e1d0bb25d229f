"""Summary maps: a call's fused maps reduced over action tokens, layers and/or denoising steps, as JPEGs.

The fused maps are the renderer's (pi0viz.core.maps.fused_maps: max over heads, the drawn keys and cameras), reduced by mean
(default) or max over the chosen axes, drawn with the renderer's painters and written beside the tree, which is
left unchanged:

    attention_viz/inference_timestep_N/summary/
        mean_over_action_tokens/diffusion_timestep_D/layer_L/fused_attention_on_{camera}.jpg   (D x L cells)
        mean_over_action_tokens_steps/layer_L/...                                              (one per layer)
        mean_over_action_tokens_layers_steps/fused_attention_on_{camera}.jpg                   (the whole call)

Each summary map has its own color scale (its max, shared by its cameras and the prompt, as the tree's default
"cell" scale). Captions give the reduced map's max, the reduced attention mass (same reduction), and the top.

A pi0-FAST decoding call (DecodeBundle) has decode steps and layers, one query per step and no action tokens; its
summaries (defaults: over layers, over decode steps, over both) are written the same way:

    attention_viz/inference_timestep_N/summary/
        mean_over_layers/decode_step_J/fused_attention_on_{camera,text,generated}.jpg   (what token J reads)
        mean_over_decode_steps/layer_L/fused_attention_on_{camera,text}.jpg
        mean_over_layers_decode_steps/fused_attention_on_{camera,text}.jpg              (the whole call)

(the map over the tokens generated so far only where a decode step is kept: its key group grows with the steps).

Per episode, `write_episode_strip` lays the whole-call summary of every call side by side
(`attention_viz/episode_summary.jpg`: one row of tiles per camera, one column per call, one color scale for the
strip so that calls compare).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import simplejpeg

from pi0viz.core import fusion
from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.colormap import colormap_lut, readable_ink
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.maps import FusedMaps, decode_maps, fused_maps
from pi0viz.core.images import resize_with_pad
from pi0viz.errors import AnalysisError
from pi0viz.render.files import inference_dir, safe_names, write_atomic
from pi0viz.render.glyphs import GlyphAtlas
from pi0viz.render.panels import (
    DEFAULT_ALPHA,
    LABEL_CHARS,
    CameraPainter,
    Caption,
    TextPainter,
    as_rgbx,
    display_piece,
    layout_prompt,
)

Reduce = Literal["mean", "max"]
AXES = ("steps", "layers", "action_tokens")  # axis 0, 1, 2 of the fused maps [D, L, A, R]
DEFAULT_SUMMARIES = ("action_tokens", "action_tokens+steps", "action_tokens+layers+steps")
_DIR_NAMES = ("diffusion_timestep", "layer", "action_token")  # folder prefix of each kept axis, in tree order
PATCH_PX = 14
_SHORT = {"steps": "steps", "layers": "layers", "action_tokens": "tokens"}  # caption words (24 characters a line)
DECODE_AXES = ("steps", "layers")  # a decoding call's axes (steps = decode steps): its fused maps are [J, L, 1, R]
DEFAULT_DECODE_SUMMARIES = ("layers", "steps", "layers+steps")
_DECODE_SHORT = {"steps": "decode steps", "layers": "layers"}


@dataclasses.dataclass
class CallSummary:
    """Reduced maps of one call.

    Attributes:
        name: folder name, e.g. "mean_over_action_tokens".
        axes: the reduced axes (names from AXES).
        maps: float32[D', L', A', R] fused values over the drawn keys; reduced axes have length 1.
        mass: float32[D', L', A', N] attention mass per region, reduced the same way.
        regions: [(name, start, stop)] ranges into R (cameras, then "text").
    """

    name: str
    axes: tuple[str, ...]
    maps: np.ndarray
    mass: np.ndarray
    regions: list[tuple[str, int, int]]


def parse_summaries(spec: str | Sequence[str | Sequence[str]], *, decoding: bool = False) -> list[tuple[str, ...]]:
    """'action_tokens,action_tokens+steps' (or a list of such items, or of axis tuples) ->
    [("action_tokens",), ("steps", "action_tokens")], each tuple in AXES order. `decoding`: the axes of a pi0-FAST
    call, "steps" (its decode steps) and "layers" only."""
    def item_text(item: object) -> str:
        if isinstance(item, str):
            return item
        if isinstance(item, (list, tuple)) and all(isinstance(a, str) for a in item):
            return "+".join(item)
        raise AnalysisError(f"summaries: each item must be a '+'-joined string or a tuple of axis names from "
                            f"{list(AXES)}, got {item!r:.80}")

    if isinstance(spec, str):
        raw = spec.split(",")
    elif isinstance(spec, (list, tuple)):
        raw = [item_text(item) for item in spec]
    else:
        raise AnalysisError(f"summaries must be a string such as 'action_tokens,action_tokens+steps' or a list of "
                            f"them, got {type(spec).__name__}")
    items = [s for s in raw if s.strip()]
    if not items:
        raise AnalysisError(f"summaries is empty: name at least one, e.g. 'action_tokens' (axes: {list(AXES)})")
    out = []
    for item in items:
        axes = tuple(a.strip() for a in str(item).split("+") if a.strip())
        bad = [a for a in axes if a not in AXES]
        if decoding and "action_tokens" in axes:
            raise AnalysisError("a decoding (pi0-FAST) call has no action tokens (one query per decode step): "
                                f"reduce over '+'-joined names from {list(DECODE_AXES)}, e.g. 'layers' or 'steps'")
        if bad or not axes:
            raise AnalysisError(f"unknown summary axes {bad or item!r}; use '+'-joined names from {list(AXES)}, "
                                "e.g. 'action_tokens' or 'action_tokens+layers+steps'")
        out.append(tuple(a for a in AXES if a in axes))
    return out


def check_summary_options(*, how: object = "mean", inference_step: object = None, batch: object = 0,
                          alpha: object = DEFAULT_ALPHA, per_row: object = 16,
                          bundle: CaptureBundle | DecodeBundle | None = None) -> None:
    """AnalysisError naming the argument unless: how is "mean" or "max"; inference_step None or an integer >= 0
    (1.5 and True are not); batch an integer in 0..B-1; alpha a finite number in [0, 1]; per_row an integer >= 1.
    Checked before anything is computed or written."""
    def integer(value: object) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

    if how not in ("mean", "max"):
        raise AnalysisError(f"how must be 'mean' or 'max', got {how!r:.60}")
    if inference_step is not None and (not integer(inference_step) or not 0 <= int(inference_step) < 2**31):
        raise AnalysisError(f"inference_step must be an integer in 0..2^31-1 (it names a folder), got "
                            f"{inference_step!r:.60}")
    if not integer(batch) or int(batch) < 0 or (bundle is not None and int(batch) >= bundle.batch_size):
        size = f"0..{bundle.batch_size - 1}" if bundle is not None else ">= 0"
        raise AnalysisError(f"batch must be an integer in {size}, got {batch!r:.60}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) or \
            not 0.0 <= float(alpha) <= 1.0:
        raise AnalysisError(f"alpha must be a number in [0, 1], got {alpha!r:.60}")
    if not integer(per_row) or int(per_row) < 1:
        raise AnalysisError(f"per_row must be an integer >= 1, got {per_row!r:.60}")


def reduce_call(fused: fusion.FusedCall | FusedMaps, axes: Sequence[str], how: Reduce = "mean") -> CallSummary:
    """Reduce a fused call over `axes` (names from AXES), keeping them as length-1 axes."""
    if how not in ("mean", "max"):
        raise AnalysisError(f"summary reduction must be 'mean' or 'max', got {how!r}")
    idx = tuple(AXES.index(a) for a in axes)
    op = np.mean if how == "mean" else np.max
    maps = op(fused.fused, axis=idx, keepdims=True).astype(np.float32)
    mass = op(fused.region_mass, axis=idx, keepdims=True).astype(np.float32)
    ordered = [a for a in ("action_tokens", "layers", "steps") if a in axes]  # read as "over tokens, layers, steps"
    return CallSummary(name=f"{how}_over_{'_'.join(ordered)}", axes=tuple(axes), maps=maps, mass=mass,
                       regions=fused.regions)


class _Painter:
    """The renderer's camera, prompt and caption painters for one bundle, drawing one summary cell at a time."""

    def __init__(self, bundle: CaptureBundle, batch: int, regions: list[tuple[str, int, int]],
                 colormap: str = "inferno", alpha: float = DEFAULT_ALPHA) -> None:
        lut = colormap_lut(colormap)
        rows, cols = bundle.patch_grid
        h, w = rows * PATCH_PX, cols * PATCH_PX
        atlas = GlyphAtlas(11)
        files = safe_names(bundle.camera_names)
        self.panels: list[tuple[str, object, Caption, np.ndarray]] = []
        for name, _, _ in regions[:-1]:
            c = bundle.camera_names.index(name)
            image = bundle.images[batch, c]
            if image.shape[:2] != (h, w):
                image = resize_with_pad(np.ascontiguousarray(image), h, w)
            painter = CameraPainter(image, bundle.patch_grid, lut, alpha=alpha)
            caption = Caption(name, painter.shape[1], lut, atlas)
            buf = np.empty((painter.shape[0] + caption.height, painter.shape[1]), np.uint32)
            self.panels.append((files[c], painter, caption, buf))
        text = layout_prompt(list(bundle.token_pieces[batch]), list(bundle.token_mask[batch]), width=2 * w)
        caption = Caption("prompt", text.width, lut, atlas)
        buf = np.empty((text.height + caption.height, text.width), np.uint32)
        self.panels.append(("text", TextPainter(text, lut, readable_ink(lut)), caption, buf))
        self.regions = regions

    def draw(self, levels: np.ndarray, peaks: np.ndarray, mass: np.ndarray, tops: np.ndarray,
             label: tuple[str, str], chars: int = LABEL_CHARS) -> list[tuple[str, bytes]]:
        """JPEGs of one cell: levels uint8[R]; peaks, mass, tops float[regions], one per drawn region; `label`
        the two caption lines that say what the map is (as the tree's call/step and action/layer lines), the
        second cut at `chars` characters (and at the panel's width)."""
        out = []
        for n, ((file, painter, caption, buf), (_, start, stop)) in enumerate(zip(self.panels, self.regions)):
            split = painter.shape[0] if isinstance(painter, CameraPainter) else painter.layout.height
            painter.draw(levels[start:stop], buf[:split])
            parts = [(3, 0, caption.strip(label[0], LABEL_CHARS)), (4, 0, caption.strip(label[1], chars))]
            caption.draw(buf[split:], peak=float(peaks[n]), mass=float(mass[n]), top=float(tops[n]), label=parts)
            out.append((f"fused_attention_on_{file}.jpg",
                        simplejpeg.encode_jpeg(as_rgbx(buf), quality=90, colorspace="RGBX", colorsubsampling="420")))
        return out


def write_call_summaries(bundle: CaptureBundle | DecodeBundle, out_dir: str | os.PathLike, *,
                         summaries: str | Sequence[str | Sequence[str]] = DEFAULT_SUMMARIES, how: Reduce = "mean",
                         inference_step: int | None = None, batch: int = 0,
                         alpha: float = DEFAULT_ALPHA) -> list[CallSummary]:
    """Write the summary maps of one call under `out_dir`/inference_timestep_N/summary/.

    Args:
        bundle: the call; a pi0-FAST decoding call (DecodeBundle) goes to `write_decode_summaries`.
        out_dir: root of the attention_viz tree (the tree itself is not touched).
        summaries: which axes to reduce, one tuple (or '+'-joined string) per summary (the default
            DEFAULT_SUMMARIES means DEFAULT_DECODE_SUMMARIES for a decoding call).
        how: "mean" or "max" over the reduced axes.
        inference_step: N; default the bundle's, else 0.
        alpha: heat-map weight over the image (as the renderer's --alpha).

    Returns:
        the reduced maps, in the order of `summaries`.
    """
    if isinstance(bundle, DecodeBundle):
        return write_decode_summaries(bundle, out_dir, how=how, inference_step=inference_step, batch=batch,
                                      alpha=alpha, summaries=DEFAULT_DECODE_SUMMARIES
                                      if summaries is DEFAULT_SUMMARIES else summaries)
    specs = parse_summaries(summaries)
    check_summary_options(how=how, inference_step=inference_step, batch=batch, alpha=alpha, bundle=bundle)
    call = fused_maps(bundle, batch_index=batch)
    step = inference_step if inference_step is not None else (bundle.inference_step or 0)
    root = Path(inference_dir(os.fspath(out_dir), step)) / "summary"
    painter = _Painter(bundle, batch, call.regions, alpha=alpha)
    labels = (np.asarray(bundle.step_indices), np.asarray(bundle.layer_indices), np.arange(bundle.num_action_tokens))
    results = []
    for axes in specs:
        s = reduce_call(call, axes, how)
        scale = fusion.ColorScale()  # "cell": each summary map its own top, shared by its regions
        tops = fusion.scale_tops(s.maps, s.regions, scale)
        levels = fusion.to_levels(s.maps, tops, s.regions, scale)
        peaks = np.stack([s.maps[..., a:b].max(axis=-1) if b > a else np.zeros(s.maps.shape[:3], np.float32)
                          for _, a, b in s.regions], axis=-1)
        for index in np.ndindex(*s.maps.shape[:3]):
            folder = root / s.name
            for axis, i in enumerate(index):  # tree order: step, layer, action token; reduced axes have no folder
                if AXES[axis] not in axes:
                    folder = folder / f"{_DIR_NAMES[axis]}_{int(labels[axis][i])}"
            folder.mkdir(parents=True, exist_ok=True)
            kept = "  ".join(f"{word} {int(labels[axis][i])}" for axis, (word, i) in
                             enumerate(zip(("step", "layer", "action"), index)) if AXES[axis] not in axes)
            label = (f"call {step}  {how} over", f"{'+'.join(_SHORT[a] for a in axes)}  {kept}".strip())
            for name, data in painter.draw(levels[index], peaks[index], s.mass[index], tops[index], label):
                write_atomic(os.fspath(folder / name), data)
        results.append(s)
    return results


@dataclasses.dataclass
class _DecodeCall:
    """A decoding call's fused maps in the shape reduce_call reads: the step's one query as a length-1 token axis.

    Attributes:
        fused: float32[J, L, 1, R] max over heads on the drawn keys. region_mass: float32[J, L, 1, M'] (cameras,
        prompt). regions: [(name, start, stop)] into R. generated: float32[J, L, Jg] max over heads on the tokens
        generated so far; generated_mass: float32[J, L] their head-mean mass.
    """

    fused: np.ndarray
    region_mass: np.ndarray
    regions: list[tuple[str, int, int]]
    generated: np.ndarray
    generated_mass: np.ndarray


def _decode_call(bundle: DecodeBundle, batch: int) -> tuple[_DecodeCall, list[str], bool]:
    """(the call's maps from the one fused-maps step, pi0viz.core.maps.decode_maps; generated pieces; whether the
    capture kept the generated tokens' keys)."""
    m = decode_maps(bundle, batch_index=batch)
    call = _DecodeCall(fused=m.fused[:, :, None], region_mass=m.region_mass[:, :, None, :-1], regions=m.regions,
                       generated=m.generated, generated_mass=m.region_mass[..., -1])
    return call, m.generated_pieces, m.has_generated


def _decode_name(name: str) -> str:
    """A summary's folder name in decode-step words: mean_over_layers_steps -> mean_over_layers_decode_steps."""
    return name.replace("steps", "decode_steps")


def write_decode_summaries(bundle: DecodeBundle, out_dir: str | os.PathLike, *,
                           summaries: str | Sequence[str | Sequence[str]] = DEFAULT_DECODE_SUMMARIES,
                           how: Reduce = "mean",
                           inference_step: int | None = None, batch: int = 0,
                           alpha: float = DEFAULT_ALPHA) -> list[CallSummary]:
    """Write the summary maps of one pi0-FAST decoding call under `out_dir`/inference_timestep_N/summary/.

    The fused maps are decode_maps' (max over heads of each decode step's query on the drawn keys), reduced by
    `how` over "steps" (the decode steps) and/or "layers"; folders mean_over_layers/decode_step_J/,
    mean_over_decode_steps/layer_L/, mean_over_layers_decode_steps/. Where a decode step J is kept, its map over
    the tokens generated up to J is drawn too (fused_attention_on_generated.jpg, on the cell's scale).

    Args: as `write_call_summaries` (axes "steps" and "layers" only).

    Returns:
        the reduced maps (CallSummary with maps float32[J', L', 1, R], names in decode-step words), in order.
    """
    specs = parse_summaries(summaries, decoding=True)
    check_summary_options(how=how, inference_step=inference_step, batch=batch, alpha=alpha, bundle=bundle)
    call, pieces, has_generated = _decode_call(bundle, batch)
    step = inference_step if inference_step is not None else (bundle.inference_step or 0)
    root = Path(inference_dir(os.fspath(out_dir), step)) / "summary"
    painter = _Painter(bundle, batch, call.regions, alpha=alpha)
    lut = colormap_lut("inferno")
    width = 2 * bundle.patch_grid[1] * PATCH_PX
    gen_caption = Caption("generated tokens (so far)", width, lut, GlyphAtlas(11))
    steps, layers = np.asarray(bundle.step_indices), np.asarray(bundle.layer_indices)
    op = np.mean if how == "mean" else np.max
    results = []
    for axes in specs:
        s = reduce_call(call, axes, how)
        s = dataclasses.replace(s, name=_decode_name(s.name))
        keep_steps = "steps" not in axes
        gen = op(call.generated, axis=1, keepdims=True) if "layers" in axes else call.generated  # [J, L', Jg]
        gen_mass = op(call.generated_mass, axis=1, keepdims=True) if "layers" in axes else call.generated_mass
        cell_top = s.maps.max(axis=-1, initial=0.0)  # [J', L', 1]: the cell's one scale, shared by its panels
        if keep_steps and has_generated:  # the generated panel shares it (as in the decode tree)
            cell_top = np.maximum(cell_top, gen.max(axis=-1, initial=0.0)[..., None])
        tops = np.repeat(cell_top[..., None], len(s.regions), axis=-1).astype(np.float32)  # [J', L', 1, M']
        levels = fusion.to_levels(s.maps, tops, s.regions, fusion.ColorScale())
        peaks = np.stack([s.maps[..., a:b].max(axis=-1) if b > a else np.zeros(s.maps.shape[:3], np.float32)
                          for _, a, b in s.regions], axis=-1)
        over = "+".join(_DECODE_SHORT[a] for a in ("layers", "steps") if a in axes)
        for j, l in np.ndindex(*s.maps.shape[:2]):
            folder = root / s.name
            kept = []
            if keep_steps:
                label = int(steps[j])
                folder = folder / f"decode_step_{label}"
                piece = pieces[label] if label < len(pieces) else f"#{label}"
                kept.append(f'decode {label} "{display_piece(piece)}"')
            if "layers" not in axes:
                folder = folder / f"layer_{int(layers[l])}"
                kept.append(f"layer {int(layers[l])}")
            folder.mkdir(parents=True, exist_ok=True)
            label_text = (f"call {step}  {how} over", f"{over}  {'  '.join(kept)}".strip())
            index = (j, l, 0)
            files = painter.draw(levels[index], peaks[index], s.mass[index], tops[index], label_text,
                                 chars=2 * LABEL_CHARS)
            if keep_steps and has_generated:
                files.append(_generated_panel(gen[j, l], gen_mass[j, l], int(steps[j]), pieces, float(tops[index][0]),
                                              gen_caption, lut, width, label_text))
            for name, data in files:
                write_atomic(os.fspath(folder / name), data)
        results.append(s)
    return results


def _generated_panel(values: np.ndarray, mass: float, step: int, pieces: list[str], top: float, caption: Caption,
                     lut: np.ndarray, width: int, label: tuple[str, str]) -> tuple[str, bytes]:
    """fused_attention_on_generated.jpg of a kept decode step: values float[Jg] over the generated tokens, of
    which tokens 0..step are shown (the ones that step's query can see)."""
    shown = [k <= step for k in range(len(pieces))]
    text = TextPainter(layout_prompt(pieces, shown, width=width), lut, readable_ink(lut))
    seen = np.asarray(values[:step + 1], np.float32)
    level = np.clip(np.rint(seen * (255.0 / top if top > 0 else 0.0)), 0, 255).astype(np.uint8)
    buf = np.empty((text.layout.height + caption.height, text.layout.width), np.uint32)
    text.draw(level, buf[:text.layout.height])
    parts = [(3, 0, caption.strip(label[0], LABEL_CHARS)), (4, 0, caption.strip(label[1], 2 * LABEL_CHARS))]
    caption.draw(buf[text.layout.height:], peak=float(seen.max(initial=0.0)), mass=float(mass), top=top, label=parts)
    return ("fused_attention_on_generated.jpg",
            simplejpeg.encode_jpeg(as_rgbx(buf), quality=90, colorspace="RGBX", colorsubsampling="420"))


def write_episode_strip(calls: Sequence[tuple[int, CallSummary, CaptureBundle | DecodeBundle]],
                        out_path: str | os.PathLike, *,
                        per_row: int = 16, batch: int = 0, alpha: float = DEFAULT_ALPHA) -> Path:
    """One image for an episode: per camera a row of tiles, one per call (its whole-call summary map), wrapped
    every `per_row` calls. All tiles share one color scale (the max over the strip), so calls compare.

    Args:
        calls: (inference_step, a CallSummary reduced over steps, layers and action tokens, the call's bundle).
        out_path: the JPEG to write.
    """
    if not calls:
        raise AnalysisError("no calls to put in the episode strip")
    check_summary_options(batch=batch, alpha=alpha, per_row=per_row, bundle=calls[0][2])
    lut = colormap_lut("inferno")
    atlas = GlyphAtlas(11)
    first = calls[0][2]
    rows, cols = first.patch_grid
    h, w = rows * PATCH_PX, cols * PATCH_PX
    cams = [name for name, _, _ in calls[0][1].regions[:-1]]
    top = max(float(s.maps[..., : s.regions[-1][1]].max()) for _, s, _ in calls) if cams else 0.0
    if not cams:
        raise AnalysisError("the calls have no unmasked camera to draw")
    tiles = []  # [camera][call] uint32 panels
    for ci, cam in enumerate(cams):
        row = []
        for n, s, b in calls:
            if s.maps.shape[:3] != (1, 1, 1):
                raise AnalysisError("episode strips need summaries reduced over steps, layers and action tokens")
            _, start, stop = s.regions[ci]
            values = s.maps[0, 0, 0, start:stop]
            level = fusion.to_levels(values[None, None, None], np.full((1, 1, 1, 1), top, np.float32),
                                     [("cam", 0, stop - start)], fusion.ColorScale())[0, 0, 0]
            image = b.images[batch, b.camera_names.index(cam)]
            if image.shape[:2] != (h, w):
                image = resize_with_pad(np.ascontiguousarray(image), h, w)
            painter = CameraPainter(image, b.patch_grid, lut, alpha=alpha)
            caption = Caption(f"call {n} · {cam}", w, lut, atlas)
            buf = np.empty((h + caption.height, w), np.uint32)
            painter.draw(level, buf[:h])
            label = [(3, 0, caption.strip(f"call {n}  {s.name.split('_')[0]} over", LABEL_CHARS)),
                     (4, 0, caption.strip("layers+decode steps" if "decode_steps" in s.name
                                          else "tokens+layers+steps", LABEL_CHARS))]
            caption.draw(buf[h:], peak=float(values.max()), mass=float(s.mass[0, 0, 0, ci]), top=top, label=label)
            row.append(buf)
        tiles.append(row)
    tile_h, tile_w = tiles[0][0].shape
    bands = [range(i, min(i + per_row, len(calls))) for i in range(0, len(calls), per_row)]
    canvas = np.full((len(bands) * len(cams) * tile_h, min(per_row, len(calls)) * tile_w), 0xFFFFFFFF, np.uint32)
    for bi, band in enumerate(bands):
        for ci in range(len(cams)):
            y = (bi * len(cams) + ci) * tile_h
            for k, n in enumerate(band):
                canvas[y:y + tile_h, k * tile_w:(k + 1) * tile_w] = tiles[ci][n]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(os.fspath(out), simplejpeg.encode_jpeg(as_rgbx(canvas), quality=90, colorspace="RGBX",
                                                         colorsubsampling="420"))
    return out


def episode_strip_from_bundles(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, *,
                               how: Reduce = "mean", per_row: int = 16) -> Path:
    """`write_episode_strip` for saved bundles (one call each, ordered by inference step): denoising calls reduced
    over steps, layers and action tokens, or pi0-FAST decoding calls over decode steps and layers (not mixed)."""
    from pi0viz.core.runs import load_call

    check_summary_options(how=how, per_row=per_row)
    calls = []
    for i, p in enumerate(paths):
        b = load_call(p)
        if calls and isinstance(b, DecodeBundle) != isinstance(calls[0][2], DecodeBundle):
            raise AnalysisError(f"{p}: an episode strip shows one kind of call; this one mixes denoising (pi0, pi0.5) "
                                "and decoding (pi0-FAST) bundles")
        if isinstance(b, DecodeBundle):
            s = reduce_call(_decode_call(b, 0)[0], DECODE_AXES, how)
            s = dataclasses.replace(s, name=_decode_name(s.name))
        else:
            s = reduce_call(fused_maps(b), AXES, how)
        n = b.inference_step if b.inference_step is not None else i
        calls.append((int(n), s, b))
    calls.sort(key=lambda c: c[0])
    return write_episode_strip(calls, out_path, per_row=per_row)
