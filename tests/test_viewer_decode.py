"""The viewer on pi0-FAST decoding bundles (pi0viz.capture/2): the decode-step slider, the map over the tokens
generated so far, captions naming the generated token; in numpy and in a real headless Chromium.

Ground truth: hot keys planted with pi0viz.core.synthetic.place_hot_decode_key at known decode steps (a camera
patch at one step, a generated token at another); expected colors from pi0viz.core.fusion applied to the values the
page holds.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.core import fusion
from pi0viz.core.bundle import save_bundle
from pi0viz.core.decode_bundle import save_decode_bundle
from pi0viz.core.synthetic import place_hot_decode_key, synthetic_bundle, synthetic_decode_bundle
from pi0viz.errors import Pi0vizError
from pi0viz.viewer import write_viewer
from pi0viz.viewer.build import scan_tree
from pi0viz.viewer.data import decode_call_arrays, decode_fused
from pi0viz.viewer.page import colormap_tables

GRID, SIZE = (4, 4), 56  # 4 x 4 patches of 14 px
CAMS = ("base_0_rgb", "left_wrist_0_rgb")
T, VALID = 8, 5
PPC = GRID[0] * GRID[1]
P = len(CAMS) * PPC + T
HOT_A = dict(step=1, layer=1, camera=0, patch=2 * 4 + 1)  # base camera, row 2, col 1
HOT_B = dict(step=3, layer=1, camera=1, patch=0 * 4 + 3)  # wrist camera, row 0, col 3
HOT_GEN = dict(step=4, layer=0, token=2)  # decode step 4 looks back at generated token 2
LUT = np.asarray(colormap_tables()["inferno"], np.float64).reshape(256, 3)


def hot_call(steps: int = 6, inference_step: int = 0, seed: int = 0):
    b = synthetic_decode_bundle(num_steps=steps, num_layers=2, num_heads=2, camera_names=CAMS, patch_grid=GRID,
                                image_size=SIZE, num_text_tokens=T, num_valid_text=VALID, seed=seed,
                                inference_step=inference_step)
    for hot in (HOT_A, HOT_B):
        if hot["step"] < steps:
            place_hot_decode_key(b, step=hot["step"], layer=hot["layer"], head=1,
                                 key=hot["camera"] * PPC + hot["patch"], mass=0.9)
    if HOT_GEN["step"] < steps:
        place_hot_decode_key(b, step=HOT_GEN["step"], layer=HOT_GEN["layer"], head=0, key=P + HOT_GEN["token"],
                             mass=0.8)
    return b


def page_meta(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])


# -- the arrays (numpy) -------------------------------------------------------------------------------------------


def test_arrays_hold_each_steps_hot_key_and_the_generated_map() -> None:
    b = hot_call()
    call = decode_call_arrays(b)
    values = decode_fused(call)[:, :, 0]  # [J, L, R]
    assert values.shape[:2] == (6, 2) and call.heads is None
    names = [n for n, _, _ in call.drawn_regions]
    assert names == [*CAMS, "text", "generated"]
    for hot in (HOT_A, HOT_B):
        _, start, _ = call.drawn_regions[hot["camera"]]
        assert int(np.argmax(values[hot["step"], hot["layer"]])) == start + hot["patch"]
        assert values[hot["step"], hot["layer"], start + hot["patch"]] == pytest.approx(0.9, rel=0.01)
    _, g0, g1 = call.drawn_regions[-1]
    assert g1 - g0 == b.num_generated and call.drawn_keys[g0:].tolist() == list(range(P, P + b.num_generated))
    gen = values[..., g0:g1]
    for j in range(6):  # step j's query sees generated tokens 0..j only
        assert (gen[j, :, j + 1:] == 0).all() and (gen[j, :, :j + 1] > 0).all()
    assert int(np.argmax(values[HOT_GEN["step"], HOT_GEN["layer"]])) == g0 + HOT_GEN["token"]
    assert call.generated_ids == b.generated_ids[0].tolist() and call.generated_pieces == [f"a{j}" for j in range(6)]
    # masses: every camera slot, the prompt, the generated tokens; a planted 0.9 on one camera shows in its mass
    assert [n for n, _ in call.mass_regions] == [*CAMS, "prompt", "generated"]
    mass = call.mass[HOT_A["step"], HOT_A["layer"], 0, -1] / 65535  # head mean
    assert mass[0] > 0.45 and mass.sum() == pytest.approx(1.0, abs=2e-3)


def test_page_meta_and_cli_view_of_a_pi0_fast_folder(tmp_path: Path) -> None:
    folder = tmp_path / "episode"
    for i, steps in enumerate((6, 3)):  # two calls of different lengths (the second stopped early)
        save_decode_bundle(hot_call(steps, inference_step=i, seed=i), folder / "bundles" / f"inference_{i:03d}.npz")
    page = tmp_path / "view.html"
    result = CliRunner().invoke(main, ["view", str(folder), "--out", str(page)])
    assert result.exit_code == 0, result.output
    assert "for 2 call(s)" in result.output
    meta = page_meta(page)
    assert meta["kind"] == "decoding" and meta["dims"]["D"] == 6 and meta["dims"]["A"] == 1
    assert [c["D"] for c in meta["calls"]] == [6, 3]
    assert [c["source"] for c in meta["calls"]] == ["inference_000.npz", "inference_001.npz"]
    assert meta["calls"][1]["generatedPieces"] == ["a0", "a1", "a2"]


def test_mixed_kinds_are_refused_in_one_line(tmp_path: Path) -> None:
    dec = save_decode_bundle(hot_call(), tmp_path / "a" / "inference_000.npz")
    pi0 = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2)
    pi0.inference_step = 1
    den = save_bundle(pi0, tmp_path / "a" / "inference_001.npz")
    with pytest.raises(Pi0vizError, match="denoising.*decoding") as err:
        write_viewer([den, dec], tmp_path / "v.html")
    assert "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["view", str(tmp_path / "a"), "--out", str(tmp_path / "v.html")])
    assert result.exit_code == 1 and "mixes" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_decode_tree_is_indexed(tmp_path: Path) -> None:
    from pi0viz.render import RenderOptions, render_decode_bundle

    render_decode_bundle(hot_call(), tmp_path / "attention_viz", RenderOptions(steps="0,4", layers="1"),
                         inference_step=2)
    tree = scan_tree(tmp_path / "attention_viz", tmp_path)
    assert tree["kind"] == "decoding" and tree["calls"] == [2] and tree["steps"] == [0, 4]
    assert tree["tokens"] == [0] and tree["layers"] == [1]
    assert tree["files"] == [f"fused_attention_on_{n}.jpg" for n in (*CAMS, "text", "generated")]


# -- in a browser ---------------------------------------------------------------------------------------------------


class Page:
    """A playwright page that records page errors; waits by polling (the page's CSP forbids eval)."""

    def __init__(self, browser, url: str):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.wait("document.documentElement.dataset.ready === '1'")

    def wait(self, expr: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expr):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expr}")
            time.sleep(0.02)

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def block_levels(self, camera: str) -> np.ndarray:
        """int[rows, cols]: the inferno level of each patch block's center pixel (alpha 1: the colormap alone)."""
        rgb = self.js("""(cam) => {
            const cv = document.querySelector(`canvas[data-camera="${cam}"]`);
            const [rows, cols] = pi0viz.meta.calls[pi0viz.state.call].grid;
            const ctx = cv.getContext('2d'), bh = cv.height / rows, bw = cv.width / cols, out = [];
            for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) {
                const d = ctx.getImageData(Math.floor((k + 0.5) * bw), Math.floor((r + 0.5) * bh), 1, 1).data;
                out.push([d[0], d[1], d[2]]);
            }
            return out;
        }""", camera)
        rgb = np.asarray(rgb, np.float64).reshape(GRID[0], GRID[1], 1, 3)
        return ((rgb - LUT) ** 2).sum(-1).argmin(-1)


def expected(call, step: int, layer: int) -> np.ndarray:
    """uint8[R] levels of one cell by pi0viz.core.fusion (shared per-cell scale) from the page's own values."""
    fused = decode_fused(call)  # [J, L, 1, R]
    scale = fusion.ColorScale()
    tops = fusion.scale_tops(fused, call.drawn_regions, scale)
    return fusion.to_levels(fused, tops, call.drawn_regions, scale)[step, layer, 0]


@pytest.mark.browser
def test_decode_slider_shows_each_steps_data(browser, tmp_path: Path) -> None:
    from pi0viz.render import RenderOptions, render_decode_bundle

    calls = [hot_call(6, inference_step=0), hot_call(3, inference_step=1, seed=1)]
    render_decode_bundle(calls[0], tmp_path / "attention_viz", RenderOptions(layers="1"))
    out = write_viewer(calls, tmp_path / "view.html", tree=tmp_path / "attention_viz")
    page = Page(browser, out.as_uri() + "#alpha=1&l=1")
    assert page.js("document.getElementById('name-step').textContent") == "decode step"
    assert page.js("document.getElementById('row-token').hidden") is True
    arrays = decode_call_arrays(calls[0])
    ids = calls[0].generated_ids[0]
    seen = {}
    for hot in (HOT_A, HOT_B):
        page.page.locator("#s-step").fill(str(hot["step"]))  # the decode-step slider, as a user drags it
        page.wait(f"pi0viz.view.d === {hot['step']}")
        assert page.js("pi0viz.view.l") == hot["layer"]
        levels = page.block_levels(CAMS[hot["camera"]])
        seen[hot["step"]] = levels
        assert np.unravel_index(np.argmax(levels), levels.shape) == divmod(hot["patch"], GRID[1])
        _, start, stop = arrays.drawn_regions[hot["camera"]]
        want = expected(arrays, hot["step"], hot["layer"])[start:stop].reshape(GRID)
        assert np.abs(levels - want).max() <= 1  # the canvas holds exactly this step's values
        # the captions name the generated token: its id and text
        token = f'id {ids[hot["step"]]} "a{hot["step"]}"'
        assert page.js("document.getElementById('o-step').textContent") == f'{hot["step"]}: {token}'
        assert token in page.js("document.getElementById('query-caption').textContent")
        gen = page.js("Array.from(document.querySelectorAll('#gen-tokens .tok')).map(s => s.className)")
        assert len(gen) == 6 and ["future" in c for c in gen] == [j > hot["step"] for j in range(6)]
        src = page.js("document.querySelector('#tree-files img').getAttribute('src')")  # the rendered JPEG too
        cell = f"inference_timestep_0/decode_step_{hot['step']}/layer_1"
        want_src = f"attention_viz/{cell}/fused_attention_on_{CAMS[0]}.jpg"
        assert src == want_src
    assert not np.array_equal(seen[HOT_A["step"]], seen[HOT_B["step"]]), "moving the decode slider changed nothing"

    # the generated-token map: step 4, layer 0 looks back at generated token 2 (the hottest key of the cell)
    page.js("pi0viz.set({d: 4, l: 0})")
    page.wait("pi0viz.view.d === 4 && pi0viz.view.l === 0")
    levels = page.js("Array.from(document.querySelectorAll('#gen-tokens .tok')).map(s => s.dataset.level)")
    _, g0, _ = arrays.drawn_regions[-1]
    want = expected(arrays, 4, 0)[g0:]
    assert levels[:5] == [str(v) for v in want[:5]] and levels[5] == ""  # token 5 is not generated yet
    assert levels[HOT_GEN["token"]] == "255"

    # the second call stopped after 3 tokens: the slider's range follows, the step is clamped
    page.js("pi0viz.set({call: 1})")
    page.wait("pi0viz.view.call === 1")
    assert page.js("document.getElementById('s-step').max") == "2" and page.js("pi0viz.state.d") == 2
    assert page.js("document.querySelectorAll('#gen-tokens .tok').length") == 3
    assert page.errors == [] and all(u.startswith("file:") or u.startswith("data:") for u in page.requests)
