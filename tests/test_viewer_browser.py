"""The viewer page in a real headless Chromium: open from file://, move controls, read canvas pixels back.

Ground truth is constructed with pi0viz.core.synthetic.place_hot_key; expected color levels come from
pi0viz.core.fusion (the renderer's math) applied to the values the page holds.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pi0viz.core import fusion
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
from pi0viz.viewer import serve_viewer, write_viewer
from pi0viz.viewer.data import call_arrays, decode_fused
from pi0viz.viewer.page import colormap_tables

CELL = dict(step=3, layer=5, action_token=17)  # the cell (d, l, a) that holds the hot spots
HOT_PATCH = (4, 11)  # base camera patch (row, col)
HOT_TOKEN = 7  # prompt slot


pytestmark = pytest.mark.browser


class Page:
    """A playwright page that records every request and page error."""

    def __init__(self, browser, url: str):
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1500, "height": 1000})
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url)
        self.wait("document.documentElement.dataset.ready === '1'")

    def wait(self, expr: str, timeout: float = 20.0) -> None:
        """Poll `expr` (the page's CSP forbids eval, so playwright's wait_for_function cannot run in it)."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expr):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expr}")
            time.sleep(0.02)

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def settle(self) -> None:
        """Wait until no data block is loading (side files) and the status line is clear."""
        self.wait("document.getElementById('status').textContent === ''")

    def blocks(self, camera: str) -> np.ndarray:
        """[rows, cols, 4]: per patch block of a camera canvas, (mean R, G, B, max spread inside the block)."""
        data = self.js("""(cam) => {
            const cv = document.querySelector(`canvas[data-camera="${cam}"]`);
            const c = pi0viz.meta.calls[pi0viz.state.call];
            const [rows, cols] = c.grid;
            const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
            const bh = cv.height / rows, bw = cv.width / cols, out = [];
            for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) {
                let s = [0, 0, 0], lo = [255, 255, 255], hi = [0, 0, 0], n = 0;
                for (let y = r * bh; y < (r + 1) * bh; y++) for (let x = k * bw; x < (k + 1) * bw; x++) {
                    const i = 4 * (y * cv.width + x);
                    for (let ch = 0; ch < 3; ch++) {
                        const v = px[i + ch];
                        s[ch] += v; lo[ch] = Math.min(lo[ch], v); hi[ch] = Math.max(hi[ch], v);
                    }
                    n++;
                }
                out.push([s[0] / n, s[1] / n, s[2] / n, Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])]);
            }
            return [rows, cols, out];
        }""", camera)
        rows, cols, flat = data
        return np.asarray(flat, np.float64).reshape(rows, cols, 4)


LUT = np.asarray(colormap_tables()["inferno"], np.float64).reshape(256, 3)


def to_level(rgb: np.ndarray) -> np.ndarray:
    """Nearest inferno level for each RGB triple [..., 3]."""
    dist = ((rgb[..., None, :] - LUT) ** 2).sum(-1)
    return dist.argmin(-1)


def hot_bundle(**kw):
    kw.setdefault("num_steps", 4)
    kw.setdefault("num_layers", 6)
    kw.setdefault("num_action_tokens", 20)
    b = synthetic_bundle(**kw)
    place_hot_key(b, **CELL, head=6, key=HOT_PATCH[0] * 16 + HOT_PATCH[1], mass=0.9)
    place_hot_key(b, **CELL, head=2, key=b.layout.text_region.start + HOT_TOKEN, mass=0.5)
    return b


@pytest.fixture(scope="module")
def hot_page_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("hot") / "view.html"
    b = hot_bundle()
    write_viewer([b], out, heads="side")
    return out, b


def expected_levels(bundle, scale: fusion.ColorScale, head: int | None = None) -> np.ndarray:
    """Levels of the hot cell computed by pi0viz.core.fusion from the values the page decodes."""
    call = call_arrays(bundle)
    fused = decode_fused(call)  # [D, L, A, R]
    tops = fusion.scale_tops(fused, call.drawn_regions, scale)
    d, l, a = CELL["step"], CELL["layer"], CELL["action_token"]
    if head is None:
        values = fused
    else:
        r = call.heads[d].astype(np.float32) / 255  # [L, A, H, R]
        values = np.zeros(fused.shape[:3] + (call.heads[d].shape[2], fused.shape[3]), np.float32)
        values[d] = r * r * call.cell_max[d][..., None, None]
    levels = fusion.to_levels(values, tops, call.drawn_regions, scale)
    return levels[d, l, a] if head is None else levels[d, l, a, head]


def test_keyboard_moves_to_hot_cell_and_canvas_shows_the_hot_patch(browser, hot_page_path):
    path, bundle = hot_page_path
    page = Page(browser, path.as_uri() + "#alpha=1")
    before = page.blocks("base_0_rgb")
    page.page.locator("body").click(position={"x": 5, "y": 5})
    for key, n in (("]", CELL["step"]), ("ArrowRight", CELL["action_token"]), ("ArrowUp", CELL["layer"])):
        for _ in range(n):
            page.page.keyboard.press(key)
    state = page.js("pi0viz.state")
    assert (state["d"], state["a"], state["l"]) == (CELL["step"], CELL["action_token"], CELL["layer"])
    assert page.js("document.getElementById('s-token').value") == str(CELL["action_token"])
    after = page.blocks("base_0_rgb")
    assert not np.allclose(before[..., :3], after[..., :3]), "moving the controls did not change the canvas"
    # Patch-exact: every patch block is one flat color, and the hottest block is the hot patch.
    assert after[..., 3].max() == 0, "a patch block is not a single color: blocks are not patch-exact"
    levels = to_level(after[..., :3])
    assert np.unravel_index(levels.argmax(), levels.shape) == HOT_PATCH
    assert levels[HOT_PATCH] == 255 and np.sort(levels.ravel())[-2] < 128
    for cam in ("left_wrist_0_rgb", "right_wrist_0_rgb"):  # shared scale: cameras nobody looks at stay cold
        assert to_level(page.blocks(cam)[..., :3]).max() < 64, cam
    # The page's levels are the renderer's (pi0viz.core.fusion) for the whole cell, cameras and text.
    np.testing.assert_array_equal(np.asarray(page.js("Array.from(pi0viz.view.levels)")),
                                  expected_levels(bundle, fusion.ColorScale()))
    # The hottest prompt box is token 7, drawn in its level's color.
    toks = page.js("""Array.from(document.querySelectorAll('#tokens .tok')).map(
        s => [Number(s.dataset.token), getComputedStyle(s).backgroundColor])""")
    rgb = np.asarray([[float(v) for v in c[4:-1].split(",")] for _, c in toks])
    tok_levels = to_level(rgb)
    assert toks[int(tok_levels.argmax())][0] == HOT_TOKEN
    assert abs(int(tok_levels.max()) - round(0.5 / 0.9 * 255)) <= 2
    assert page.errors == []


def test_single_head_view_shows_that_heads_map(browser, hot_page_path):
    path, bundle = hot_page_path
    d, l, a = CELL["step"], CELL["layer"], CELL["action_token"]
    page = Page(browser, path.as_uri() + f"#d={d}&l={l}&a={a}&alpha=1")
    page.page.select_option("#sel-head", "2")
    page.settle()  # head maps come from a side file loaded on demand
    levels = to_level(page.blocks("base_0_rgb")[..., :3])
    assert levels.max() < 64, "head 2 does not look at the base camera"
    np.testing.assert_array_equal(np.asarray(page.js("Array.from(pi0viz.view.levels)")),
                                  expected_levels(bundle, fusion.ColorScale(), head=2))
    hottest = page.js("""Array.from(document.querySelectorAll('#tokens .tok'))
        .sort((x, y) => Number(y.dataset.level) - Number(x.dataset.level))[0].dataset.token""")
    assert hottest == str(HOT_TOKEN)
    page.page.select_option("#sel-head", "6")
    page.settle()
    levels = to_level(page.blocks("base_0_rgb")[..., :3])
    assert np.unravel_index(levels.argmax(), levels.shape) == HOT_PATCH
    np.testing.assert_array_equal(np.asarray(page.js("Array.from(pi0viz.view.levels)")),
                                  expected_levels(bundle, fusion.ColorScale(), head=6))
    assert any(u.endswith("view_data/h0_3.js") for u in page.requests)


@pytest.mark.parametrize("setup, scale", [
    ("#sel-scope=region", fusion.ColorScale(scope="region")),
    ("#sel-scope=layer", fusion.ColorScale(scope="layer")),
    ("#sel-scope=global;#in-pct=99", fusion.ColorScale(scope="global", percentile=99.0)),
    ("#in-pct=90;#in-gamma=0.5", fusion.ColorScale(percentile=90.0, gamma=0.5)),
    ("#chk-log=on;#in-decades=2", fusion.ColorScale(log_decades=2.0)),
])
def test_scale_modes_match_the_renderer(browser, hot_page_path, setup, scale):
    path, bundle = hot_page_path
    d, l, a = CELL["step"], CELL["layer"], CELL["action_token"]
    page = Page(browser, path.as_uri() + f"#d={d}&l={l}&a={a}")
    for step in setup.split(";"):
        sel, value = step.split("=")
        kind = page.js(f"document.querySelector('{sel}').tagName + document.querySelector('{sel}').type")
        if kind == "SELECTselect-one":
            page.page.select_option(sel, value)
        elif kind == "INPUTcheckbox":
            page.page.check(sel)
        else:
            page.page.fill(sel, value)
            page.page.press(sel, "Enter")
    got = np.asarray(page.js("Array.from(pi0viz.view.levels)"), int)
    want = expected_levels(bundle, scale).astype(int)
    # float32 (page) vs numpy percentile/log rounding: at most one level apart, nearly always equal
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.99


def test_hover_shows_patch_and_token_values(browser, hot_page_path):
    path, bundle = hot_page_path
    d, l, a = CELL["step"], CELL["layer"], CELL["action_token"]
    page = Page(browser, path.as_uri() + f"#d={d}&l={l}&a={a}")
    box = page.page.locator('canvas[data-camera="base_0_rgb"]').bounding_box()
    r, c = HOT_PATCH
    page.page.mouse.move(box["x"] + (c + 0.5) * box["width"] / 16, box["y"] + (r + 0.5) * box["height"] / 16)
    tip = page.js("document.getElementById('tip').textContent")
    assert "base_0_rgb" in tip and "patch (4, 11)" in tip and f"key {r * 16 + c}" in tip
    assert "p = 0.9000" in tip and "level 255" in tip  # the cell maximum is stored exactly
    page.page.locator(f'#tokens .tok[data-token="{HOT_TOKEN}"]').hover()
    tip = page.js("document.getElementById('tip').textContent")
    piece = str(bundle.token_pieces[0, HOT_TOKEN])
    assert tip.startswith(f'token {HOT_TOKEN}  "{piece}"')
    value = float(tip.split("p = ")[1].split()[0])
    assert abs(value - 0.5) < 0.5 * 0.004  # uint8 square-root quantization: <= 0.4 % near the top


def test_data_text_is_escaped_and_masked_camera_not_drawn(browser, tmp_path):
    evil = '<img src=x onerror=alert(1)>'
    b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=4, image_masks=(True, True, False),
                         camera_names=("base_0_rgb", "<b>wrist</b>", "right_wrist_0_rgb"))
    b.token_pieces = b.token_pieces.astype("<U64")
    b.token_pieces[0, 3] = evil
    b.prompt = np.asarray(['</script><script>alert("prompt")</script>'])
    out = write_viewer([b], tmp_path / "evil.html", heads="none")
    page = Page(browser, out.as_uri())
    assert page.js("document.querySelectorAll('img').length") == 0
    assert page.js("document.querySelector('#tokens .tok[data-token=\"3\"]').textContent") == evil
    assert page.js("document.getElementById('prompt').textContent").startswith('prompt: </script><script>')
    assert page.js("document.querySelectorAll('canvas[data-camera]').length") == 2
    assert page.js("document.querySelector('canvas[data-camera=\"<b>wrist</b>\"]') !== null")
    assert page.js("document.querySelectorAll('b').length") == 0
    # The masked slot: no canvas, a note instead, no mass grid, and its keys are not among the drawn ones.
    assert page.js("document.querySelector('canvas[data-camera=\"right_wrist_0_rgb\"]')") is None
    assert "masked" in page.js("document.querySelector('.cam.masked').textContent")
    assert page.js("pi0viz.visibleRegions()") == ["base_0_rgb", "<b>wrist</b>", "prompt", "state", "actions"]
    assert page.js("pi0viz.view.levels.length") == 2 * 256 + 12
    assert page.dialogs == [] and page.errors == []


def test_no_network_requests_from_file_or_loopback_server(browser, hot_page_path):
    path, _ = hot_page_path
    page = Page(browser, path.as_uri() + "#head=1")
    page.settle()
    page.page.keyboard.press("]")
    page.settle()
    folder = path.parent.as_uri()
    inside = [u.startswith(folder + "/") or u.startswith("data:") for u in page.requests]
    assert page.requests and all(inside), page.requests
    server, url = serve_viewer(path, port=0, background=True)
    try:
        assert server.server_address[0] == "127.0.0.1"
        page = Page(browser, url + "#head=4")
        page.settle()
        assert page.js("pi0viz.view.head") == 4
        host = url.split("/")[2]
        assert all(u.split("/")[2] == host or u.startswith("data:") for u in page.requests), page.requests
    finally:
        server.shutdown()
        server.server_close()


def _constructed_mass_bundle(step: int, camera_share: float):
    """Cell (d=1, l=2, a=3): heads 0-6 put camera_share on base, 0.1 on left, 0.2 on the prompt, 0.05 on the
    state and the rest on the actions; head 7 looks only at the prompt. Other cells stay random."""
    b = synthetic_bundle(num_steps=3, num_layers=4, num_action_tokens=5, seed=step)
    lay = b.layout
    row = np.zeros(lay.num_keys, np.float64)
    base, left = lay.camera_region(0), lay.camera_region(1)
    text = np.flatnonzero(b.token_mask[0]) + lay.text_region.start
    row[base.slice] = camera_share / len(base)
    row[left.slice] = 0.1 / len(left)
    row[text] = 0.2 / len(text)
    row[lay.state_region.slice] = 0.05
    row[lay.action_region.slice] = (1 - camera_share - 0.35) / len(lay.action_region)
    q = lay.action_query(3)
    b.attention[1, 2, 0, 0, :7, q] = row
    b.attention[1, 2, 0, 0, 7, q] = 0
    b.attention[1, 2, 0, 0, 7, q, text] = 1.0 / len(text)
    b.inference_step = step
    return b


def test_mass_grid_and_episode_overview_show_constructed_masses(browser, tmp_path):
    shares = {5: 0.4, 2: 0.2, 9: 0.3}  # given out of order: the page orders calls by inference step
    out = write_viewer([_constructed_mass_bundle(s, v) for s, v in shares.items()], tmp_path / "ep.html",
                       heads="none", fused="side")  # each call's maps load from side files when selected
    page = Page(browser, out.as_uri() + "#d=1&l=2&a=3")
    assert page.js("pi0viz.meta.calls.map(c => c.step)") == [2, 5, 9]
    grid = np.asarray(page.js("pi0viz.massGrid()"))  # [M, L, D] for the selected token, mean over heads
    assert grid.shape == (6, 4, 3)
    np.testing.assert_allclose(grid.sum(0), 1.0, atol=1e-3)  # every cell's regions sum to 1
    want = 7 / 8 * np.array([0.2, 0.1, 0.0, 0.2, 0.05, 0.45]) + 1 / 8 * np.array([0, 0, 0, 1, 0, 0])
    np.testing.assert_allclose(grid[:, 2, 1], want, atol=1e-4)  # call 0 = inference step 2, share 0.2
    np.testing.assert_allclose(np.asarray(page.js("pi0viz.massGrid(7)"))[:, 2, 1], [0, 0, 0, 1, 0, 0], atol=1e-4)
    # Hover the grid cell (step 1, layer 2) of the prompt region: the tooltip shows the same number.
    box = page.page.locator('#massgrid canvas[data-region="prompt"]').bounding_box()
    page.page.mouse.move(box["x"] + 1.5 * box["width"] / 3, box["y"] + 2.5 * box["height"] / 4)
    assert f"mass {want[3]:.4f}" in page.js("document.getElementById('tip').textContent")
    # Across calls, same cell: the base camera's share follows the constructed values in step order.
    ep = np.asarray(page.js("pi0viz.episodeMass()"))  # [N, M]
    np.testing.assert_allclose(ep[:, 0], [7 / 8 * v for v in (0.2, 0.4, 0.3)], atol=1e-4)
    assert page.js("!document.getElementById('episode').hidden")
    page.page.locator("body").click(position={"x": 5, "y": 5})
    page.page.keyboard.press(".")
    page.settle()
    assert page.js("pi0viz.state.call") == 1 and page.js("pi0viz.view.call") == 1
    assert any(u.endswith("ep_data/f1.js") for u in page.requests)
    assert page.js("document.getElementById('o-call').textContent").startswith("5")
    # Clicking a grid cell selects that layer and step.
    page.page.mouse.click(box["x"] + 0.5 * box["width"] / 3, box["y"] + 3.5 * box["height"] / 4)
    assert (page.js("pi0viz.state.d"), page.js("pi0viz.state.l")) == (0, 3)
    assert page.errors == []


def test_attention_viz_tree_is_browsed_by_relative_path(browser, tmp_path):
    from pi0viz.render import RenderOptions, render_bundle

    b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=3, image_masks=(True, True, False))
    render_bundle(b, tmp_path / "attention_viz", RenderOptions(workers=1), inference_step=4)
    out = write_viewer([], tmp_path / "pages" / "tree.html", tree=tmp_path / "attention_viz")
    page = Page(browser, out.as_uri())
    srcs = page.js("Array.from(document.querySelectorAll('#tree-files img')).map(i => i.getAttribute('src'))")
    assert srcs == ["../attention_viz/inference_timestep_4/diffusion_timestep_0/action_token_0/layer_0/" + f for f in
                    ("fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                     "fused_attention_on_text.jpg")]
    page.page.locator("body").click(position={"x": 5, "y": 5})
    for key in ("]", "ArrowRight", "ArrowRight", "ArrowUp"):
        page.page.keyboard.press(key)
    page.wait("Array.from(document.querySelectorAll('#tree-files img')).every(i => i.complete)")
    first = page.js("document.querySelector('#tree-files img').getAttribute('src')")
    assert "/diffusion_timestep_1/action_token_2/layer_1/" in first
    assert page.js("Array.from(document.querySelectorAll('#tree-files img')).every(i => i.naturalWidth > 0)")
    assert page.js("document.getElementById('maps').hidden")
    assert page.errors == []
    # Served from the common folder of page and tree (as `pi0viz view --serve` does), the same paths load.
    server, url = serve_viewer(out, port=0, root=tmp_path, background=True)
    try:
        assert url.endswith("/pages/tree.html")
        page = Page(browser, url)
        page.wait("Array.from(document.querySelectorAll('#tree-files img')).every(i => i.complete)")
        assert page.js("Array.from(document.querySelectorAll('#tree-files img')).every(i => i.naturalWidth > 0)")
        assert all(u.startswith(url.rsplit("/", 2)[0]) for u in page.requests), page.requests
    finally:
        server.shutdown()
        server.server_close()
