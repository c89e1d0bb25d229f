"""Render one inference call's fused attention as the attention_viz tree, in parallel.

`prepare_job` does all the math for the whole call at once (fusion, color scales, uint8 levels) and builds
the painters; `run_job` then only paints, encodes and writes, one task per (step, action token) covering
all selected layers. Workers are forked after preparation, so they inherit the levels and painters instead
of receiving pickled arrays per task.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np
import simplejpeg

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.colormap import DEFAULT_COLORMAP, colormap_lut, readable_ink
from pi0viz.core.fusion import ColorScale, FusionError, scale_tops, to_levels
from pi0viz.core.maps import drawn_cameras, fused_maps
from pi0viz.core.images import resize_with_pad
from pi0viz.core.selection import folder_index
from pi0viz.core.sinks import detect_sinks
from pi0viz.core.selection import parse_selection
from pi0viz.core.writes import make_folder as make_folders
from pi0viz.errors import BundleError, SelectionError
from pi0viz.render.files import (
    RESUME_HINT,
    RenderError,
    cell_dir,
    inference_dir,
    is_complete_jpeg,
    make_cell_folder,
    remove_stale_temps,
    safe_names,
    write_atomic_in,
)
from pi0viz.render.glyphs import GlyphAtlas
from pi0viz.render.panels import (
    CAPTION_PAPER,
    DEFAULT_ALPHA,
    DEFAULT_ZOOM,
    CameraPainter,
    CameraStack,
    Caption,
    TextPainter,
    Upsample,
    as_rgbx,
    CellLabels,
    layout_prompt,
    pack_rgb,
)

SINK_OUTLINE = int(pack_rgb(np.array([0, 255, 255], np.uint8)))  # cyan: no inferno color is near it
MODEL_PATCH_PX = 14  # SigLIP So400m/14: the model sees rows*14 x cols*14 pixels (224 x 224 for 16 x 16 patches)
DEFAULT_QUALITY = 85


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """What to draw and how. Selections take lists or strings like "0,3-5,9"; None = all.

    Attributes:
        steps: denoising steps by their original index (the D in diffusion_timestep_D).
        action_tokens: action tokens (0-based, A in action_token_A).
        layers: layers by their original index (L in layer_L).
        cameras: camera names; masked cameras are never drawn.
        scale: color scale (default: shared by all regions of a cell).
        colormap: matplotlib colormap name, used as a 256-entry table.
        zoom: integer upsampling of the model-input image (1: 224 x 224 maps, one 14 x 14 block per patch).
        upsample: "nearest" (exact patch blocks) or "bilinear".
        alpha: heat-map weight in the blend with the image, 0..1.
        quality: JPEG quality 1..95.
        per_head: also write per_head_attention_on_{region}.jpg: the fused map next to every head's map.
        composite: also write composite.jpg per cell: every camera side by side, the prompt below, with captions.
        workers: processes; None = all cores, 1 = in this process.
        resume: skip cells whose files all exist; finish the rest.
        batch_index: which batch element to draw (B > 1 captures hold several environments).
        check_probs: verify that "probs" rows sum to 1 over their valid keys.
        exclude_sinks: compute the color scale without the attention sinks of each (step, layer)
            (pi0viz.core.sinks); sinks are then drawn clipped at the top color and outlined in cyan, and every
            caption title says "scale w/o sinks".
    """

    steps: str | Sequence[int] | None = None
    action_tokens: str | Sequence[int] | None = None
    layers: str | Sequence[int] | None = None
    cameras: str | Sequence[str] | None = None
    scale: ColorScale = ColorScale()
    colormap: str = DEFAULT_COLORMAP
    zoom: int = DEFAULT_ZOOM
    upsample: Upsample = "nearest"
    alpha: float = DEFAULT_ALPHA
    quality: int = DEFAULT_QUALITY
    per_head: bool = False
    composite: bool = False
    workers: int | None = None
    resume: bool = False
    batch_index: int = 0
    check_probs: bool = True
    exclude_sinks: bool = False

    def validate(self) -> None:
        if not (isinstance(self.zoom, (int, np.integer)) and 1 <= self.zoom <= 16):
            raise RenderError(f"zoom must be an integer in 1..16, got {self.zoom!r}")
        if self.upsample not in ("nearest", "bilinear"):
            raise RenderError(f"upsample must be 'nearest' or 'bilinear', got {self.upsample!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise RenderError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 1 <= self.quality <= 100:
            raise RenderError(f"quality must be in 1..100, got {self.quality}")
        if self.workers is not None and self.workers < 1:
            raise RenderError(f"workers must be >= 1, got {self.workers}")


@dataclasses.dataclass
class RenderSummary:
    """What a render did. `out_dir` is the inference_timestep_N folder."""

    out_dir: str
    files_written: int
    files_skipped: int
    cells: int
    bytes_written: int
    seconds: float
    workers: int
    notes: list[str]

    def __str__(self) -> str:
        lines = [f"wrote {self.files_written} files ({self.bytes_written / 1e6:.1f} MB) for {self.cells} cells "
                 f"in {self.seconds:.1f} s with {self.workers} worker(s)"]
        if self.files_skipped:
            lines.append(f"resume: kept {self.files_skipped} finished files")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"look in: {self.out_dir}")
        return "\n".join(lines)


# -- preparation ----------------------------------------------------------------------------------------


class RenderJob:
    """Everything the workers need, prepared once: levels, captions' numbers, painters, paths."""

    def __init__(self, bundle: CaptureBundle, out_dir: str, inference_step: int, options: RenderOptions) -> None:
        options.validate()
        self.options = options
        self.notes: list[str] = []
        b = options.batch_index
        if not 0 <= b < bundle.batch_size:
            raise RenderError(f"batch_index {b} out of range: this capture has batch size {bundle.batch_size}")
        if not bundle.token_mask[b].any():
            raise RenderError("the prompt is empty (token_mask has no True entry): expected at least one prompt token")
        inference_step = folder_index(inference_step, "the inference step (inference_step)", RenderError)  # a folder
        cameras = self._select(bundle)
        # The one camera rule (pi0viz.core.maps): masked cameras and cameras nobody ever attends to are not drawn.
        self.drawn = drawn_cameras(bundle, b)
        self.image_masks = self.drawn.image_masks
        keep_cams = [c for c in cameras if self.image_masks[b, c]]
        self.notes += self.drawn.notes(among=cameras)
        self._fuse(bundle, keep_cams)
        self._build_painters(bundle, keep_cams)
        self.out_root = inference_dir(out_dir, inference_step)
        self.labels = CellLabels(self.captions[-1][0], int(inference_step), self.step_labels,
                                 [float(t) for t in bundle.diffusion_times], bundle.num_action_tokens, self.layer_labels)

    def _select(self, bundle: CaptureBundle) -> list[int]:
        """Positions of the selected steps, layers, action tokens; returns the selected camera slots."""
        step_labels = [int(s) for s in bundle.step_indices]  # the numbers that appear in the paths
        layer_labels = [int(s) for s in bundle.layer_indices]
        steps = parse_selection(self.options.steps, step_labels, "diffusion steps")  # SelectionError if bad
        layers = parse_selection(self.options.layers, layer_labels, "layers")
        actions = parse_selection(self.options.action_tokens, range(bundle.num_action_tokens), "action tokens")
        cameras = self._select_cameras(bundle.camera_names, self.options.cameras)
        step_at = {s: i for i, s in enumerate(step_labels)}
        layer_at = {s: i for i, s in enumerate(layer_labels)}
        self.step_pos = [step_at[s] for s in steps]
        self.layer_pos = [layer_at[s] for s in layers]
        self.action_pos = list(actions)
        self.step_labels, self.layer_labels = step_labels, layer_labels
        return cameras

    def _fuse(self, bundle: CaptureBundle, keep_cams: list[int]) -> None:
        """Levels, scale tops and caption numbers of every cell (over the whole call, so that scales such as
        "global" never depend on the selection)."""
        options, b = self.options, self.options.batch_index
        try:
            call = fused_maps(bundle, batch_index=b, keep_heads=options.per_head, check=options.check_probs,
                              drawn=self.drawn)
        except FusionError as err:
            raise RenderError(str(err)) from None
        # call.regions = every unmasked camera in slot order, then the prompt (last). Keep the selected cameras
        # by slot (names from data may even be "text"), then the prompt.
        fused_cams = call.cameras
        self.regions = call.regions
        self.region_keep = [fused_cams.index(c) for c in keep_cams] + [len(call.regions) - 1]
        self.sinks = None
        scaled = call.fused
        if options.exclude_sinks:  # the scale ignores the sinks; they saturate (clip) at the top color
            self.sinks = detect_sinks(call.fused, np.ones(call.fused.shape[-1], bool))  # [D, L, R]
            scaled = np.where(self.sinks[:, :, None, :], np.float32(0), call.fused)
            cells = int(self.sinks.any(axis=-1).sum())
            self.notes.append(f"--exclude-sinks: {cells} of {self.sinks.shape[0] * self.sinks.shape[1]} (step, layer) "
                              "cells have sinks; they are outlined and left out of the color scale")
        self.tops = scale_tops(scaled, call.regions, options.scale)  # [D, L, A, M]
        self.levels = to_levels(call.fused, self.tops, call.regions, options.scale)  # [D, L, A, R] uint8
        self.peaks = np.stack([call.fused[..., s:e].max(axis=-1) for _, s, e in call.regions], axis=-1)  # [D, L, A, M]
        self.mass = call.region_mass
        self.head_levels = self.head_peaks = self.head_mass = None
        if call.heads is not None:
            self.head_levels = to_levels(call.heads, self.tops, call.regions, options.scale)  # [D, L, A, N, R]
            self.head_peaks = np.stack([call.heads[..., s:e].max(axis=-1) for _, s, e in call.regions], axis=-1)
            self.head_mass = np.stack([call.heads[..., s:e].sum(axis=-1) for _, s, e in call.regions], axis=-1)
        self.num_heads = 0 if call.heads is None else call.heads.shape[3]

    def _build_painters(self, bundle: CaptureBundle, keep_cams: list[int]) -> None:
        """One painter and caption set per drawn camera, then the prompt's; images at the model input size."""
        options, b = self.options, self.options.batch_index
        lut = colormap_lut(options.colormap)
        zoom = int(options.zoom)
        atlas = GlyphAtlas(11 * zoom)
        rows, cols = bundle.patch_grid
        want_h, want_w = rows * MODEL_PATCH_PX, cols * MODEL_PATCH_PX
        file_names = safe_names(bundle.camera_names)
        self.painters: list = []
        self.captions: list[list[Caption]] = []
        self.file_names: list[str] = []
        for c in keep_cams:
            name, image = bundle.camera_names[c], bundle.images[b, c]
            if image.shape[:2] != (want_h, want_w):
                self.notes.append(f"camera {name!r}: image {image.shape[0]}x{image.shape[1]} resized with padding to "
                                  f"{want_h}x{want_w}, the model input size for a {rows}x{cols} grid of 14 px patches")
                image = resize_with_pad(image, want_h, want_w)
            painter = CameraPainter(image, bundle.patch_grid, lut, zoom=zoom, alpha=options.alpha,
                                    upsample=options.upsample)
            self.painters.append(painter)
            self.captions.append(self._captions(name, painter.shape[1], lut, atlas, zoom))
            self.file_names.append(file_names[c])
        self.text_layout = layout_prompt(list(bundle.token_pieces[b]), list(bundle.token_mask[b]),
                                         width=2 * want_w * zoom, zoom=zoom)
        self.painters.append(TextPainter(self.text_layout, lut, readable_ink(lut)))
        self.captions.append(self._captions("prompt", self.text_layout.width, lut, atlas, zoom))
        self.file_names.append("text")
        self._buffers: list[np.ndarray] | None = None
        self._composite_buf: np.ndarray | None = None
        self._stack: CameraStack | None = None
        if keep_cams and options.upsample == "nearest":  # the fast path: all cameras of a cell at once
            n = len(keep_cams)
            self._stack = CameraStack(self.painters[:n], [c[0] for c in self.captions[:n]])
            spans = [self.regions[r][1:] for r in self.region_keep[:n]]
            contiguous = all(spans[i][1] == spans[i + 1][0] for i in range(n - 1))
            self._cam_keys = (slice(spans[0][0], spans[-1][1]) if contiguous
                              else np.concatenate([np.arange(s, e) for s, e in spans]))

    @staticmethod
    def _select_cameras(names: list[str], spec: str | Sequence[str] | None) -> list[int]:
        if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
            return list(range(len(names)))
        wanted = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise SelectionError(f"unknown camera(s) {unknown}; this capture has cameras {names}")
        return [i for i, n in enumerate(names) if n in wanted]

    def _captions(self, title: str, width: int, lut: np.ndarray, atlas: GlyphAtlas, zoom: int) -> list[Caption]:
        if self.options.exclude_sinks:
            title = f"{title} (scale w/o sinks)"
        titles = [title] + [f"{title}: head {h}" for h in range(self.num_heads if self.options.per_head else 0)]
        return [Caption(t, width, lut, atlas, zoom) for t in titles]

    # -- per cell ------------------------------------------------------------------------------------

    @property
    def tasks(self) -> list[tuple[int, int]]:
        return [(d, a) for d in self.step_pos for a in self.action_pos]

    @property
    def files_per_cell(self) -> int:
        return len(self.cell_files())

    def cell_files(self) -> list[str]:
        names = [f"fused_attention_on_{n}.jpg" for n in self.file_names]
        if self.options.per_head:
            names += [f"per_head_attention_on_{n}.jpg" for n in self.file_names]
        if self.options.composite:
            names.append("composite.jpg")
        return names

    def label(self, d: int, l: int, a: int) -> list:
        """The caption label of cell (step position d, layer position l, action a), as strips (CellLabels)."""
        return self.labels.parts(d, l, a)

    def render_task(self, d: int, a: int) -> tuple[int, int, int]:
        """Render every selected layer of cell (step position d, action a). Returns (written, bytes, skipped)."""
        written = nbytes = skipped = 0
        names = self.cell_files()
        for l in self.layer_pos:
            folder = cell_dir(self.out_root, self.step_labels[d], a, self.layer_labels[l])
            if self.options.resume:
                remove_stale_temps(folder)
                if all(is_complete_jpeg(os.path.join(folder, n)) for n in names):
                    skipped += len(names)
                    continue
            make_cell_folder(folder)
            for panel, name in zip(self.panels(d, l, a), names):
                data = simplejpeg.encode_jpeg(as_rgbx(panel), quality=self.options.quality, colorspace="RGBX",
                                              colorsubsampling="420")
                write_atomic_in(folder, name, data)
                written += 1
                nbytes += len(data)
        return written, nbytes, skipped

    def panels(self, d: int, l: int, a: int) -> list[np.ndarray]:
        """The cell's images ([h, w] uint32 RGBX, reused buffers) in the order of `cell_files`."""
        if self._buffers is None:
            self._buffers = [self._alloc(k, 1) for k in range(len(self.painters))]
            if self.options.per_head:
                self._buffers += [self._alloc(k, 1 + self.num_heads) for k in range(len(self.painters))]
        if self._stack is None:
            out = [self._draw(self._buffers[k], k, d, l, a, head=None) for k in range(len(self.painters))]
        else:  # the fast path: cameras in one go, the prompt without the generic bookkeeping
            num_cams = len(self.painters) - 1
            peaks, mass, tops = (x[d, l, a].tolist() for x in (self.peaks, self.mass, self.tops))
            keep = self.region_keep
            label = self.label(d, l, a)
            out = list(self._stack.draw(self.levels[d, l, a, self._cam_keys].reshape(num_cams, -1)))
            self._stack.numbers([peaks[n] for n in keep[:-1]], [mass[n] for n in keep[:-1]],
                                [tops[n] for n in keep[:-1]], label)
            text, (_, start, stop), buf = self.painters[-1], self.regions[keep[-1]], self._buffers[num_cams]
            split = text.layout.height
            text.draw(self.levels[d, l, a, start:stop], buf[:split])
            self.captions[-1][0].numbers(buf[split:], peak=peaks[keep[-1]], mass=mass[keep[-1]], top=tops[keep[-1]],
                                         label=label)
            out.append(buf)
        if self.sinks is not None:
            for k, panel in enumerate(out[: len(self.painters)]):
                self._outline_sinks(panel, k, d, l)
        fused = out[:len(self.painters)]
        if self.options.per_head:
            out += [self._montage(self._buffers[len(self.painters) + k], k, d, l, a) for k in range(len(self.painters))]
        if self.options.composite:
            out.append(self._composite(fused))
        return out

    def _composite(self, panels: list[np.ndarray]) -> np.ndarray:
        """Cameras side by side, the prompt below: one [h, w] uint32 image of a cell's fused panels."""
        cams, text = panels[:-1], panels[-1]
        cam_h = max((p.shape[0] for p in cams), default=0)
        width = max(sum(p.shape[1] for p in cams), text.shape[1])
        if self._composite_buf is None or self._composite_buf.shape != (cam_h + text.shape[0], width):
            self._composite_buf = np.empty((cam_h + text.shape[0], width), np.uint32)
            self._composite_buf[...] = pack_rgb(np.asarray(CAPTION_PAPER, np.uint8))
        buf, x = self._composite_buf, 0
        for p in cams:
            buf[:p.shape[0], x:x + p.shape[1]] = p
            x += p.shape[1]
        buf[cam_h:, :text.shape[1]] = text
        return buf

    def _outline_sinks(self, panel: np.ndarray, k: int, d: int, l: int) -> None:
        """Outline the sink keys of (d, l) on panel k: a patch block's border, or a prompt token's box."""
        _, start, stop = self.regions[self.region_keep[k]]
        local = np.flatnonzero(self.sinks[d, l, start:stop])
        if not len(local):
            return
        painter = self.painters[k]
        t = int(self.options.zoom)  # line width in pixels
        if isinstance(painter, CameraPainter):
            (ph, pw), cols = painter.block, painter.grid[1]
            boxes = [(c * pw, r * ph, (c + 1) * pw, (r + 1) * ph) for r, c in zip(local // cols, local % cols)]
        else:
            boxes = [tuple(int(v) for v in painter.layout.boxes[i]) for i in local]
        for x0, y0, x1, y1 in boxes:
            panel[y0:y0 + t, x0:x1] = SINK_OUTLINE
            panel[y1 - t:y1, x0:x1] = SINK_OUTLINE
            panel[y0:y1, x0:x0 + t] = SINK_OUTLINE
            panel[y0:y1, x1 - t:x1] = SINK_OUTLINE

    def _alloc(self, k: int, count: int) -> np.ndarray:
        painter, cap = self.painters[k], self.captions[k][0]
        if isinstance(painter, CameraPainter):
            h, w = painter.shape
            return np.empty((h + cap.height, w * count), np.uint32)  # panels side by side
        h, w = painter.layout.height, painter.layout.width
        buf = np.empty(((h + cap.height) * count, w), np.uint32)  # panels stacked
        buf[h:h + cap.height] = cap.static  # the fast path only rewrites the numbers
        return buf

    def _draw(self, out: np.ndarray, k: int, d: int, l: int, a: int, head: int | None) -> np.ndarray:
        n = self.region_keep[k]
        _, start, stop = self.regions[n]
        if head is None:
            levels, peak, mass = self.levels[d, l, a, start:stop], self.peaks[d, l, a, n], self.mass[d, l, a, n]
        else:
            levels = self.head_levels[d, l, a, head, start:stop]
            peak, mass = self.head_peaks[d, l, a, head, n], self.head_mass[d, l, a, head, n]
        painter = self.painters[k]
        split = painter.shape[0] if isinstance(painter, CameraPainter) else painter.layout.height
        painter.draw(levels, out[:split])
        caption = self.captions[k][0 if head is None else head + 1]
        caption.draw(out[split:], peak=float(peak), mass=float(mass), top=float(self.tops[d, l, a, n]),
                     label=self.label(d, l, a))
        return out

    def _montage(self, out: np.ndarray, k: int, d: int, l: int, a: int) -> np.ndarray:
        count = 1 + self.num_heads
        camera = isinstance(self.painters[k], CameraPainter)
        size = out.shape[1] // count if camera else out.shape[0] // count
        for i in range(count):
            view = out[:, i * size:(i + 1) * size] if camera else out[i * size:(i + 1) * size]
            self._draw(view, k, d, l, a, head=None if i == 0 else i - 1)
        return out


# -- running --------------------------------------------------------------------------------------------

_JOB: RenderJob | None = None
_STOP = None


def _init_worker(job: RenderJob | None, stop) -> None:
    global _JOB, _STOP
    if job is not None:  # fork: the job is inherited, nothing to unpickle
        _JOB = job
    _STOP = stop


def _run_task(task: tuple[int, int]) -> tuple[int, int, int]:
    if _STOP is not None and _STOP.is_set():
        return 0, 0, 0
    assert _JOB is not None
    return _JOB.render_task(*task)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def run_job(job: RenderJob, progress: Callable[[int], None] | None = None) -> RenderSummary:
    """Render all tasks of `job`; `progress(files)` is called as tasks finish (files done or skipped)."""
    global _JOB
    t0 = time.perf_counter()
    tasks = job.tasks
    workers = min(job.options.workers or default_workers(), max(1, len(tasks)))
    make_folders(job.out_root, RESUME_HINT)
    written = nbytes = skipped = 0
    pool = None
    if workers > 1:
        try:
            pool, stop = _start_pool(job, workers)
        except (OSError, EOFError, RuntimeError) as err:  # e.g. forkserver cannot re-import a `python -` script
            job.notes.append(f"could not start worker processes ({type(err).__name__}: {err}); "
                             "rendered in this process")
            workers = 1
    if pool is None:
        for task in tasks:
            w, nb, s = job.render_task(*task)
            written, nbytes, skipped = written + w, nbytes + nb, skipped + s
            if progress:
                progress(w + s)
    else:
        failure: BaseException | None = None
        try:
            for w, nb, s in _imap_until_error(pool, tasks, stop):
                written, nbytes, skipped = written + w, nbytes + nb, skipped + s
                if progress:
                    progress(w + s)
        except RenderError as err:
            failure = err
        except BaseException:
            pool.terminate()  # Ctrl-C: stop now; leftover temporaries are cleaned by --resume
            raise
        finally:
            _JOB = None
        pool.close()
        pool.join()
        if failure is not None:
            raise failure
    return RenderSummary(out_dir=job.out_root, files_written=written, files_skipped=skipped,
                         cells=len(tasks) * len(job.layer_pos), bytes_written=nbytes,
                         seconds=time.perf_counter() - t0, workers=workers, notes=list(job.notes))


def _start_pool(job: RenderJob, workers: int):
    """A worker pool that holds `job`. fork shares the prepared job for free; once JAX has started its threads
    fork is unsafe (a child could inherit a held lock), so then a forkserver gets the job pickled once per
    worker (pi0: ~10 MB of uint8 levels and painters)."""
    global _JOB
    method = "fork" if sys.platform.startswith("linux") and "jax" not in sys.modules else "forkserver"
    if method not in mp.get_all_start_methods():
        method = "spawn"
    ctx = mp.get_context(method)
    stop = ctx.Event()
    _JOB = job
    try:
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(None if method == "fork" else job, stop))
    finally:
        if method != "fork":
            _JOB = None
    return pool, stop


def _imap_until_error(pool, tasks, stop):
    """Results as they come; on the first error, let the other workers finish their current file and stop."""
    results = pool.imap_unordered(_run_task, tasks, chunksize=1)
    error: BaseException | None = None
    while True:
        try:
            item = next(results)
        except StopIteration:
            break
        except RenderError as err:
            if error is None:
                error = err
                stop.set()
            continue
        if error is None:
            yield item
    if error is not None:
        raise error


def render_bundle(bundle: CaptureBundle, out_dir: str | os.PathLike = "attention_viz",
                  options: RenderOptions | None = None, *, inference_step: int | None = None,
                  progress: Callable[[int], None] | None = None) -> RenderSummary:
    """Render a capture bundle as the attention_viz tree.

    Args:
        bundle: one inference call (see pi0viz.core.bundle.CaptureBundle for shapes).
        out_dir: root of the tree; files go to {out_dir}/inference_timestep_N/...
        options: selection, scale and quality (RenderOptions()).
        inference_step: N in the path; default the bundle's inference_step, else 0.
        progress: called with the number of files finished as work completes.
    """
    if not isinstance(bundle, CaptureBundle):  # a path is load_bundle's; anything else is not a capture
        raise BundleError(f"bundle must be a CaptureBundle (load a saved one with pi0viz.load_bundle), got "
                          f"{type(bundle).__name__}")
    if options is not None and not isinstance(options, RenderOptions):
        raise RenderError(f"options must be a pi0viz.render.RenderOptions, got {type(options).__name__}")
    options = options or RenderOptions()
    step = inference_step if inference_step is not None else (bundle.inference_step or 0)
    job = RenderJob(bundle, os.fspath(out_dir), step, options)  # RenderJob refuses 1.5, True, "1", -1
    return run_job(job, progress)
