"""`write_viewer`: capture bundles and/or an attention_viz tree -> one interactive HTML page."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.colormap import colormap_lut
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.npzfile import NpzReader
from pi0viz.core.prefix_bundle import PrefixAttention, prefix_path
from pi0viz.core.runs import load_call
from pi0viz.errors import BundleError, ViewerError
from pi0viz.viewer.data import CallArrays, call_arrays, decode_call_arrays
from pi0viz.viewer.knockouts import knockout_panel
from pi0viz.viewer.prefix import prefix_arrays, prefix_meta, read_prefix
from pi0viz.viewer.page import (
    AUTO_EMBED_CALLS,
    FusedMode,
    HeadsMode,
    PageBuilder,
    call_meta,
    check_same_layout,
    colormap_tables,
)

BundleLike = Union[CaptureBundle, DecodeBundle, str, os.PathLike]
PrefixLike = Union[PrefixAttention, str, os.PathLike]
_TREE_LEVELS = ("inference_timestep", "diffusion_timestep", "action_token", "layer")
_DECODE_TREE_LEVELS = ("inference_timestep", "decode_step", "layer")  # pi0-FAST's tree (render.decode)
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\.jpe?g")



def write_viewer(
    bundles: Sequence[BundleLike] = (),
    out_html: str | os.PathLike = "pi0viz_view.html",
    *,
    tree: str | os.PathLike | None = None,
    heads: HeadsMode = "side",
    fused: FusedMode = "auto",
    batch: int = 0,
    title: str | None = None,
    zoom: int = 2,
    colormap: str = "inferno",
    prefixes: Sequence[PrefixLike | None] | None = None,
    knockouts: Sequence[str | os.PathLike] = (),
    knockouts_root: str | os.PathLike | None = None,
) -> Path:
    """Write the viewer page for capture bundles (the calls of an episode) and/or an attention_viz tree.

    Args:
        bundles: CaptureBundle or DecodeBundle objects or .npz paths (pi0viz.capture/1 or /2, one kind per page);
            several = the inference calls of one episode, shown in the order of their `inference_step` (file
            order when a bundle has none). Decoding (pi0-FAST) calls get a decode-step slider, the map over the
            tokens generated so far and captions naming the generated token; their maps are fused (no heads).
        out_html: the page to write. Side data (if any) goes to `<stem>_data/` next to it.
        tree: an attention_viz directory of JPEGs (from `pi0viz render`); shown by relative path, driven by the
            same sliders. Alone (no bundles) the page is a browser for the tree.
        heads: per-head maps (pi0: 59 M values per call): "side" = uint8 side files loaded when a head is
            selected (default), "embed" = inside the page (single file, ~8x larger), "none" = fused only.
        fused: where the fused maps go: "embed" (inside the page), "side", or "auto" (embed up to
            AUTO_EMBED_CALLS calls).
        batch: batch element of each bundle to show.
        zoom: integer screen pixels per image pixel of the camera canvases (patch (r, c) covers exactly its
            pixel block: 224 px / 16 patches x 2 = 28 px squares).
        colormap: initial colormap: any matplotlib name (COLORMAPS are always offered in the page too).
        prefixes: the prefix's own attention of each call (pi0viz.prefix/1 files or PrefixAttention objects, None
            for a call without), in the order of `bundles`; None (default): NAME.prefix.npz next to each bundle
            path, when it exists. A call with one gets the page's "prefix" panel (viewer/prefix.py).
        knockouts: `pi0viz knockout` results (knockouts.json / knockout.json) shown in the "knockouts" panel: their
            tables and figures, embedded. Titles are their folders relative to `knockouts_root` (default: the
            page's folder).

    Returns:
        the path of the written page.
    """
    out = Path(out_html)
    if heads not in ("side", "embed", "none"):
        raise ViewerError(f"heads must be 'side', 'embed' or 'none', got {heads!r}")
    if fused not in ("auto", "embed", "side"):
        raise ViewerError(f"fused must be 'auto', 'embed' or 'side', got {fused!r}")
    tables = colormap_tables()
    if colormap not in tables:  # any matplotlib name, as in render and video (ColormapError, one line, if unknown)
        tables[colormap] = colormap_lut(colormap).reshape(-1).tolist()
    if not isinstance(zoom, int) or isinstance(zoom, bool) or not 1 <= zoom <= 16:
        raise ViewerError(f"zoom must be an integer in [1, 16] (patch-exact blocks), got {zoom!r}")
    if isinstance(bundles, (str, os.PathLike, CaptureBundle, DecodeBundle)):  # one path: a list of characters
        one = isinstance(bundles, (CaptureBundle, DecodeBundle))
        raise ViewerError(f"bundles must be a list of capture bundles or .npz paths, got one "
                          f"{type(bundles).__name__}: pass [{'bundle' if one else 'path'}]")
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 0:
        raise ViewerError(f"batch must be an integer >= 0 (a batch element of each bundle), got {batch!r:.60}")
    if title is not None and not isinstance(title, str):
        raise ViewerError(f"title must be text, got {type(title).__name__}")
    if not bundles and tree is None:
        raise ViewerError("nothing to view: give capture bundles (.npz) and/or an attention_viz tree")
    if prefixes is not None and (isinstance(prefixes, (str, os.PathLike)) or len(prefixes) != len(bundles)):
        raise ViewerError(f"prefixes must be a list with one entry (or None) per bundle ({len(bundles)})")
    builder = PageBuilder(out)
    meta: dict[str, Any] = {"version": 1, "zoom": zoom, "colormap": colormap, "colormaps": tables}
    try:
        if bundles:
            meta.update(_add_calls(builder, bundles, heads=heads, fused=fused, batch=batch, prefixes=prefixes))
        if tree is not None:
            meta["tree"] = scan_tree(Path(tree), out.parent)
        root = Path(knockouts_root) if knockouts_root is not None else out.parent
        meta["knockouts"] = [knockout_panel(k, root) for k in knockouts]
    except BaseException:
        builder.abort()  # nothing half-written: an older page and its side data stay as they were
        raise
    if title is None:
        prompt = meta["calls"][0]["prompt"] if bundles else ""
        title = "pi0viz: " + (prompt or "attention viewer")
    meta["title"] = title
    return builder.write(meta, title)


def _load(item: BundleLike, index: int) -> tuple[CaptureBundle | DecodeBundle, str]:
    if isinstance(item, (CaptureBundle, DecodeBundle)):
        return item, f"bundle {index}"
    return load_call(item), Path(item).name  # capture/1 or capture/2, by its format


def _peek_step(item: BundleLike, index: int) -> int:
    """The inference step of a bundle without loading its attention (npz members load lazily)."""
    if isinstance(item, (CaptureBundle, DecodeBundle)):
        return item.inference_step if item.inference_step is not None else index
    try:
        with NpzReader(item) as npz:  # headers checked first: a forged size allocates nothing
            header = npz.headers.get("inference_step")
            if header is None or header.shape != () or header.dtype.kind not in "iu":
                return index
            return int(npz.load("inference_step"))
    except BundleError:  # unreadable: load_bundle reports it properly below
        return index


def _prefix_of(bundles: Sequence[BundleLike], prefixes: Sequence[PrefixLike | None] | None,
               index: int) -> PrefixLike | None:
    """The prefix side file of call `index`: as given, else NAME.prefix.npz next to a bundle path (if any)."""
    if prefixes is not None:
        return prefixes[index]
    item = bundles[index]
    if isinstance(item, (str, os.PathLike)) and prefix_path(item).is_file():
        return prefix_path(item)
    return None


def _add_prefix(builder: PageBuilder, i: int, item: PrefixLike, bundle: CaptureBundle | DecodeBundle,
                batch: int, side: bool) -> dict[str, Any]:
    """Chunks pp{i}, pq{i}, pg{i} (+ their row maxima) of call i's prefix panel; returns its metadata."""
    prefix, source = read_prefix(item)
    step = bundle.inference_step
    if prefix.inference_step is not None and step is not None and prefix.inference_step != step:
        raise ViewerError(f"{source} holds the prefix attention of inference step {prefix.inference_step}, its "
                          f"bundle is step {step}: keep each NAME.prefix.npz next to its own NAME.npz")
    arrays = prefix_arrays(prefix)
    names = list(bundle.camera_names)
    same = {cam for cam, c in zip(arrays.cameras, arrays.camera_slots) if cam in names
            and bundle.images.shape[2:] == prefix.images.shape[1:]
            and np.array_equal(bundle.images[batch, names.index(cam)], prefix.images[c])}
    for name, block in arrays.blocks.items():
        builder.add(f"{name}{i}", block, side=side and name == "pg")  # the patch x patch block is the big one
    return prefix_meta(arrays, source, same)


def _add_calls(builder: PageBuilder, bundles: Sequence[BundleLike], *, heads: HeadsMode, fused: FusedMode,
               batch: int, prefixes: Sequence[PrefixLike | None] | None = None) -> dict[str, Any]:
    """Order the calls by inference step, then reduce them one at a time and hand their chunks to the builder.

    One call at a time: side files are written as they come, so an episode never holds more than one call's
    per-head maps (pi0: 59 MB) in memory. Returns the calls' metadata.
    """
    steps = [_peek_step(item, index) for index, item in enumerate(bundles)]
    if len(set(steps)) != len(steps):
        raise ViewerError(f"two bundles claim the same inference_step (steps {steps}); give each call its own step")
    order = sorted(range(len(bundles)), key=lambda k: steps[k])
    fused_side = fused == "side" or (fused == "auto" and len(bundles) > AUTO_EMBED_CALLS)
    metas: list[dict[str, Any]] = []
    episode: list[np.ndarray] = []
    first: CallArrays | None = None
    kinds: dict[str, str] = {}
    for i, index in enumerate(order):
        bundle, source = _load(bundles[index], index)
        decoding = isinstance(bundle, DecodeBundle)
        kinds.setdefault("decoding" if decoding else "denoising", source)
        if len(kinds) > 1:
            raise ViewerError(f"{kinds['denoising']} is a denoising (pi0, pi0.5) call and {kinds['decoding']} a "
                              "decoding (pi0-FAST) call: one page shows the calls of one model")
        if decoding:
            arrays = decode_call_arrays(bundle, batch=batch, index=index)
        else:
            arrays = call_arrays(bundle, batch=batch, with_heads=heads != "none", index=index)
        arrays.inference_step = steps[index]
        first = first or arrays
        check_same_layout(first, arrays, decoding=decoding)
        times = [] if decoding else bundle.diffusion_times.tolist()
        meta = call_meta(arrays, source, times, bundle.step_indices.tolist(), bundle.layer_indices.tolist())
        meta.update(cameras=list(bundle.camera_names), grid=list(bundle.patch_grid), heads=arrays.heads is not None,
                    D=int(arrays.fused.shape[0]))
        builder.add(f"f{i}", arrays.fused, side=fused_side)
        builder.add(f"c{i}", arrays.cell_max, side=fused_side)
        builder.add(f"m{i}", arrays.mass, side=fused_side)
        item = _prefix_of(bundles, prefixes, index)
        if item is not None:
            meta["prefix"] = _add_prefix(builder, i, item, bundle, batch, fused_side)
        for d, block in enumerate(arrays.heads or []):
            builder.add(f"h{i}_{d}", block, side=heads == "side")
        metas.append(meta)
        episode.append(arrays.mass[..., -1, :])  # [D, L, A, M] head-mean mass
    assert first is not None
    _, L, A, H1, M = first.mass.shape
    D = max(e.shape[0] for e in episode)  # decoding calls may stop at different steps (EOS): pad with zeros
    padded = np.zeros((len(episode), D, L, A, M), np.uint16)  # [N, D, L, A, M]; call n's steps: meta "D"
    for n, e in enumerate(episode):
        padded[n, :e.shape[0]] = e
    builder.add("e", padded, side=False)
    return {"kind": next(iter(kinds)), "calls": metas, "dims": {"D": D, "L": L, "A": A, "H": H1 - 1},
            "massRegions": [[n, k] for n, k in first.mass_regions]}


def scan_tree(root: Path, page_dir: Path) -> dict[str, Any]:
    """Index an attention_viz tree: the step/token/layer numbers present and the image files of a leaf folder.

    Only integers and file names that match a safe pattern reach the page; the page rebuilds each path as
    `<root>/inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/<file>`, or for pi0-FAST's tree
    (kind "decoding", tokens [0]) `<root>/inference_timestep_N/decode_step_J/layer_L/<file>`.
    """
    if not root.is_dir():
        raise ViewerError(f"no attention_viz tree at {root} (expected a directory of inference_timestep_N folders)")
    first = _numbered(root, "inference_timestep")
    decoding = bool(first) and bool(_numbered(root / f"inference_timestep_{first[0]}", "decode_step"))
    levels: list[list[int]] = []
    level_dir = root
    for name in _DECODE_TREE_LEVELS if decoding else _TREE_LEVELS:
        numbers = _numbered(level_dir, name)
        if not numbers:
            raise ViewerError(f"{level_dir}: no {name}_N folders; expected the attention_viz layout "
                              "inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/*.jpg (or "
                              "inference_timestep_N/decode_step_J/layer_L/*.jpg)")
        levels.append(numbers)
        level_dir = level_dir / f"{name}_{numbers[0]}"
    if decoding:
        levels.insert(2, [0])  # one query per decode step: the page's token axis has one position
    files = sorted(f.name for f in level_dir.iterdir() if f.is_file() and _SAFE_FILE.fullmatch(f.name))
    last = ("fused_attention_on_text.jpg", "fused_attention_on_generated.jpg")  # cameras first, as in the page
    files.sort(key=lambda f: (not f.startswith("fused_attention_on_"), last.index(f) + 1 if f in last else 0, f))
    rel = Path(os.path.relpath(root.resolve(), page_dir.resolve())).as_posix()
    return {"root": rel, "kind": "decoding" if decoding else "denoising", "calls": levels[0], "steps": levels[1],
            "tokens": levels[2], "layers": levels[3], "files": files}


def _numbered(folder: Path, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"_(\d+)")
    return sorted(int(m.group(1)) for e in os.scandir(folder) if e.is_dir() and (m := pattern.fullmatch(e.name)))
