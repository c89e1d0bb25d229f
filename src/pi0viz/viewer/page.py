"""Assemble the viewer page: one HTML file with its script, styles and (by default) its data inlined.

Data travels as "chunks" of raw little-endian bytes, base64 encoded, each either
- inline: `<script type="text/plain" id="pi0viz-chunk-ID">BASE64</script>` inside the page, or
- side:   `<page>_data/ID.js` holding `pi0vizChunk("ID","BASE64");`, loaded on demand with a <script src>.
  A script element (unlike fetch/XHR) may load a file next to a page opened from file://, so the page
  still works offline without a server.
Every name written to disk is built here from integers; nothing from the data becomes a path.
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from pi0viz.core.bundle import BundleError
from pi0viz.core.colormap import COLORMAPS, colormap_lut
from pi0viz.core.writes import StagedFolder, atomic_write
from pi0viz.viewer.data import CallArrays

HeadsMode = Literal["side", "embed", "none"]
FusedMode = Literal["auto", "embed", "side"]
AUTO_EMBED_CALLS = 4  # with more calls than this, "auto" moves the fused maps to side files (7 MB per pi0 call)


class PageBuilder:
    """Collects chunks and metadata, then writes the page and its side files as one unit.

    Side files go to a hidden staging folder next to the page as they come; `write` writes the page under a
    temporary name and only then swaps both into place. If anything fails before that (a bad bundle, a full
    disk, a read-only folder), `abort` removes what was staged: an older page of the same name and its side data
    stay untouched and no temporary is left. Write failures raise OutputError naming the path and the cause.
    """

    def __init__(self, out_html: Path) -> None:
        self.out_html = out_html
        self.data_dir_name = out_html.stem + "_data"
        self.inline: dict[str, str] = {}
        self.side_bytes = 0
        self.chunks: dict[str, dict[str, Any]] = {}
        self._side = StagedFolder(out_html.parent / self.data_dir_name)

    def add(self, cid: str, array: np.ndarray, *, side: bool) -> None:
        """Register `array` (uint8/uint16/float32) as chunk `cid` (an internal, [A-Za-z0-9_] name)."""
        assert re.fullmatch(r"[A-Za-z0-9_]+", cid), cid
        dtype = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16", np.dtype(np.float32): "f32"}[array.dtype]
        b64 = base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode()
        spec: dict[str, Any] = {"dtype": dtype, "shape": list(array.shape)}
        if side:  # written now, so a long episode never holds all its side data in memory
            spec["file"] = f"{self.data_dir_name}/{cid}.js"
            self._side.write(f"{cid}.js", f'pi0vizChunk("{cid}","{b64}");\n')  # on failure: staging removed
            self.side_bytes += len(b64)
        else:
            self.inline[cid] = b64
        self.chunks[cid] = spec

    def abort(self) -> None:
        """Remove staged side files (the old page and its data are untouched)."""
        self._side.abort()

    def write(self, meta: dict[str, Any], title: str) -> Path:
        try:
            return self._write(meta, title)
        finally:
            self.abort()  # a no-op after a successful swap

    def _write(self, meta: dict[str, Any], title: str) -> Path:
        meta = dict(meta, chunks=self.chunks)
        static = resources.files("pi0viz.viewer") / "static"
        page = (static / "viewer.html").read_text(encoding="utf-8")
        parts = {
            "TITLE": html.escape(title),
            "CSS": (static / "viewer.css").read_text(encoding="utf-8"),
            "META": json_for_script(meta),
            "CHUNKS": "\n".join(
                f'<script type="text/plain" id="pi0viz-chunk-{cid}">{b64}</script>' for cid, b64 in self.inline.items()
            ),
            "JS": (static / "viewer.js").read_text(encoding="utf-8"),
        }
        # One pass over the template, so a marker inside substituted text is never expanded again.
        page = re.sub(r"/\*@(TITLE|CSS|META|CHUNKS|JS)@\*/", lambda m: parts[m.group(1)], page)
        # The page's temporary is complete before the side data is swapped in (a full disk fails first), and the
        # page that refers to the new data is renamed into place right after.
        return atomic_write(self.out_html, page, before_replace=self._side.commit if self._side.started else None)


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no '<', '>', '&' or line separators."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def colormap_tables() -> dict[str, list[int]]:
    """{name: [256 * 3] RGB ints}: the renderer's own lookup tables (pi0viz.core.colormap), flattened for JSON."""
    return {name: colormap_lut(name).reshape(-1).tolist() for name in COLORMAPS}


def check_same_layout(first: CallArrays, call: CallArrays, *, decoding: bool = False) -> None:
    """All calls of one page must share D, L, A, N and the mass regions (one set of sliders drives them all);
    decoding calls may differ in D (a call stops at its end-of-sequence token: the page clamps the step slider)."""
    same = call.mass.shape[1:] == first.mass.shape[1:] if decoding else call.mass.shape == first.mass.shape
    if not same or call.mass_regions != first.mass_regions:
        raise BundleError(
            f"inference step {call.inference_step}: [D, L, A, N+1, regions] = {list(call.mass.shape)} with regions "
            f"{[n for n, _ in call.mass_regions]}, but step {first.inference_step} has {list(first.mass.shape)} "
            f"with {[n for n, _ in first.mass_regions]}; view bundles of one policy and episode together"
        )


def call_meta(call: CallArrays, source: str, times: Sequence[float], steps: Sequence[int],
              layers: Sequence[int]) -> dict[str, Any]:
    """The JSON-able description of one call (everything but the big arrays)."""
    return {
        "step": call.inference_step,
        "source": source,
        "prompt": call.prompt,
        "pieces": call.pieces,
        "tokenMask": call.token_mask,
        "imageMasks": call.image_masks,
        "imageSize": list(call.image_size),
        "drawnKeys": call.drawn_keys.tolist(),
        "drawnRegions": [[n, s, e] for n, s, e in call.drawn_regions],
        "times": [float(t) for t in times],
        "generatedIds": call.generated_ids,
        "generatedPieces": call.generated_pieces,
        "stepIndices": [int(s) for s in steps],
        "layerIndices": [int(x) for x in layers],
        "images": {name: "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
                   for name, jpeg in call.images.items()},
    }
