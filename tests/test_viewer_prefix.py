"""The viewer's "prefix" panel (a call's pi0viz.prefix/1 side file) and "knockouts" panel (pi0viz knockout results),
checked on constructed ground truth: a synthetic prefix attention with a known hot patch for a chosen prompt token,
a known hot prompt token and hot patch for a chosen patch, read back from the canvas of a real headless Chromium;
knockout tables rebuilt from the JSON that the page was made from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_viewer_browser import Page, to_level

from pi0viz.core.bundle import save_bundle
from pi0viz.core.prefix_bundle import PrefixAttention, prefix_path, save_prefix
from pi0viz.core.synthetic import synthetic_bundle
from pi0viz.viewer import write_viewer
from pi0viz.viewer.knockouts import STUDY_HEADER, condition_row
from pi0viz.viewer.prefix import dequantize_rows, prefix_arrays, quantize_rows

GRID = (16, 16)
N = GRID[0] * GRID[1]
LAYERS = 3
T = 10  # prompt slots, 6 valid
VALID = 6
HOT_LAYER = 1
HOT_TOKEN = 4  # prompt slot whose row reads HOT_TOKEN_PATCH on the wrist camera (slot 1)
HOT_TOKEN_PATCH = (3, 12)
QUERY = (9, 2)  # base camera patch whose rows read HOT_READ_TOKEN and HOT_READ_PATCH (on the wrist camera)
HOT_READ_TOKEN = 2
HOT_READ_PATCH = (14, 5)
EVIL = "<img src=x onerror=\"document.title='pwned'\">"


def synthetic_prefix(bundle, seed: int = 0) -> PrefixAttention:
    """Rows that are thin noise except the constructed hot spots; camera 2 masked (as LIBERO's right wrist), pads
    (slots >= VALID) read nothing and are read by nothing."""
    rng = np.random.default_rng(seed)
    C = len(bundle.camera_names)
    masks = np.array([True, True, False])
    p2i = rng.uniform(0, 0.002, (LAYERS, T, C * N)).astype(np.float32)
    i2p = rng.uniform(0, 0.002, (LAYERS, C * N, T)).astype(np.float32)
    i2i = rng.uniform(0, 0.001, (LAYERS, C * N, C * N)).astype(np.float32)
    p2i[:, VALID:] = 0
    i2p[:, :, VALID:] = 0
    for block in (p2i, i2i):
        block[..., 2 * N:] = 0  # the masked camera's patches are no keys
    p2i[HOT_LAYER, HOT_TOKEN, N + HOT_TOKEN_PATCH[0] * GRID[1] + HOT_TOKEN_PATCH[1]] = 0.6
    q = QUERY[0] * GRID[1] + QUERY[1]
    i2p[HOT_LAYER, q, HOT_READ_TOKEN] = 0.3
    i2i[HOT_LAYER, q, N + HOT_READ_PATCH[0] * GRID[1] + HOT_READ_PATCH[1]] = 0.5
    pieces = np.array(["<bos>", "put", EVIL, "▁bowl", "▁plate", "\n"] + ["<pad>"] * (T - VALID))
    return PrefixAttention(
        camera_names=list(bundle.camera_names), images=np.asarray(bundle.images[0]), image_masks=masks,
        token_pieces=pieces, token_mask=np.arange(T) < VALID, patch_grid=GRID,
        layer_indices=np.arange(LAYERS, dtype=np.int32), image_to_prompt=i2p.astype(np.float16),
        image_to_image=i2i.astype(np.float16), prompt_to_image=p2i.astype(np.float16), prompt="put the bowl",
        inference_step=bundle.inference_step)


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """An episode folder: one call with a prefix side file next to it, one without; a knockouts study and curves
    under knockouts/ with their figures."""
    root = tmp_path_factory.mktemp("prefix") / "ep"
    bundles = []
    for step in (0, 1):
        b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=4, num_text_tokens=T,
                             num_valid_text=VALID, image_masks=(True, True, False), seed=step)
        b.inference_step = step
        bundles.append(b)
        save_bundle(b, root / "bundles" / f"inference_{step:03d}.npz")
    prefix = synthetic_prefix(bundles[0])
    save_prefix(prefix, prefix_path(root / "bundles" / "inference_000.npz"))
    study = {"format": "pi0viz.knockout.conditions/1", "policy": "tiny", "prompt": EVIL, "random_draws": 3,
             "conditions": [
                 {"set": "camera left_wrist_0_rgb", "method": "keys", "route": "all", "layer": None, "camera": None,
                  "k": 256, "mean_abs_delta": {"mean": 0.125, "se": 0.01}, "random": None, "ratio": None},
                 {"set": EVIL, "method": "keys", "route": "prefix", "layer": 2, "camera": "base_0_rgb", "k": 8,
                  "mean_abs_delta": {"mean": 0.05, "se": 0.002}, "random": {"mean": 0.01, "se": 0.001},
                  "ratio": 5.0},
                 {"set": "top 8", "method": "pixels", "route": "all", "layer": None, "camera": "base_0_rgb", "k": 8,
                  "mean_abs_delta": {"mean": 0.02, "se": 0.003}, "random": {"mean": 0.004, "se": 0.0005},
                  "ratio": 5.0}]}
    (root / "knockouts").mkdir()
    (root / "knockouts" / "knockouts.json").write_text(json.dumps(study))
    from PIL import Image

    Image.new("RGB", (40, 20), (200, 30, 30)).save(root / "knockouts" / "knockouts.png")
    curves = {"format": "pi0viz.knockout/1", "examples": 8, "maps": {
        "step 7, layer 2, mean": {"deletion_gap": {"mean": 1.5, "se": 0.2}, "insertion_gap": {"mean": 0.5, "se": 0.1},
                                  "deletion_area": {"mean": 3.0, "se": 0.3}, "insertion_area": {"mean": 2.0, "se": 0.2}},
        "step 0, layer 0, max": {"deletion_gap": {"mean": 2.5, "se": 0.2}}}}
    (root / "curves").mkdir()
    (root / "curves" / "knockout.json").write_text(json.dumps(curves))
    (root / "broken").mkdir()
    (root / "broken" / "knockouts.json").write_text("{not json")
    return root, prefix, study


def test_quantized_rows_round_trip_and_only_drawn_keys_are_kept(episode) -> None:
    _, prefix, _ = episode
    x = np.array([[0.0, 0.25, 1.0, 1e-4], [0.0, 0.0, 0.0, 0.0]], np.float32)
    q, top = quantize_rows(x)
    assert q.dtype == np.uint8 and q[0].tolist()[:3] == [0, 128, 255] and q[1].max() == 0
    np.testing.assert_allclose(dequantize_rows(q, top)[0], x[0], atol=0.004)
    arrays = prefix_arrays(prefix)
    assert arrays.cameras == ["base_0_rgb", "left_wrist_0_rgb"] and arrays.slots == list(range(VALID))
    assert arrays.blocks["pp"].shape == (LAYERS, VALID, 2 * N)
    assert arrays.blocks["pq"].shape == (LAYERS, 2 * N, VALID)
    assert arrays.blocks["pg"].shape == (LAYERS, 2 * N, 2 * N)
    hot = dequantize_rows(arrays.blocks["pp"], arrays.blocks["ppm"])[HOT_LAYER, HOT_TOKEN]
    assert hot.argmax() == N + HOT_TOKEN_PATCH[0] * GRID[1] + HOT_TOKEN_PATCH[1]
    assert abs(hot.max() - 0.6) < 1e-3


def test_cli_view_finds_the_side_files_and_the_knockouts(episode, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pi0viz.cli import main
    from pi0viz.core.runs import read_run

    root, _, _ = episode
    ep = read_run(root).single_episode("test")
    assert [c.prefix for c in ep.calls] == [prefix_path(ep.calls[0].path), None]
    assert ep.knockouts == [root / "broken" / "knockouts.json", root / "curves" / "knockout.json",
                            root / "knockouts" / "knockouts.json"]
    page = tmp_path / "v.html"
    result = CliRunner().invoke(main, ["view", str(root), "--out", str(page), "--heads", "none"])
    assert result.exit_code == 0, result.output
    assert "prefix attention of 1 call(s), 3 knockout result(s)" in result.output
    text = page.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])
    assert meta["calls"][0]["prefix"]["source"] == "inference_000.prefix.npz" and "prefix" not in meta["calls"][1]
    assert meta["calls"][0]["prefix"]["images"] == {}  # the call's own images: not embedded twice
    assert [k["kind"] for k in meta["knockouts"]] == ["unreadable", "curves", "conditions"]
    assert EVIL not in text  # data text is escaped inside the page's JSON
    assert "pi0viz-chunk-pg0" in text and "pi0viz-chunk-pp1" not in text


def test_prefix_panel_shows_where_a_token_reads_and_what_a_patch_reads(browser, episode, tmp_path: Path) -> None:
    root, prefix, _ = episode
    page_path = write_viewer(sorted((root / "bundles").glob("inference_00?.npz")), tmp_path / "view.html",
                             heads="none")
    page = Page(browser, page_path.as_uri() + "#alpha=1")
    assert page.js("document.getElementById('prefix-panel').hidden") is False
    # the layer slider, then a click on the prompt token: its row of prompt_to_image on each camera
    page.page.locator("#s-player").fill(str(HOT_LAYER))
    page.page.locator(f'#prefix-tokens .tok[data-slot="{HOT_TOKEN}"]').click()
    view = page.js("({mode: pi0viz.prefix.view.mode, layer: pi0viz.prefix.view.layer, token: pi0viz.prefix.view.token})")
    assert view == {"mode": "token", "layer": HOT_LAYER, "token": HOT_TOKEN}
    wrist = to_level(prefix_blocks(page, "left_wrist_0_rgb")[..., :3])
    assert np.unravel_index(wrist.argmax(), wrist.shape) == HOT_TOKEN_PATCH and wrist[HOT_TOKEN_PATCH] == 255
    assert np.sort(wrist.ravel())[-2] < 16  # the noise is < 1/300 of the hot value
    # the page's levels are the file's values, quantized and scaled to each camera's maximum
    arrays = prefix_arrays(prefix)
    row = dequantize_rows(arrays.blocks["pp"], arrays.blocks["ppm"])[HOT_LAYER, HOT_TOKEN]
    for k, cam in enumerate(arrays.cameras):
        part = row[k * N:(k + 1) * N]
        want = np.clip(np.floor(part * (255 / part.max()) + 0.5), 0, 255)
        got = np.asarray(page.js(f"pi0viz.prefix.view.levels['{cam}']"))
        assert np.abs(got - want).max() <= 1, cam
    assert page.js("document.querySelector('canvas[data-prefix-camera=\"right_wrist_0_rgb\"]')") is None  # masked
    # a click on a base camera patch: the prompt tokens it reads and the patches it reads
    canvas = page.page.locator('canvas[data-prefix-camera="base_0_rgb"]')
    box = canvas.bounding_box()
    canvas.click(position={"x": (QUERY[1] + 0.5) * box["width"] / GRID[1], "y": (QUERY[0] + 0.5) * box["height"] / GRID[0]})
    view = page.js("({mode: pi0viz.prefix.view.mode, cam: pi0viz.prefix.view.cam, patch: pi0viz.prefix.view.patch})")
    assert view == {"mode": "patch", "cam": "base_0_rgb", "patch": QUERY[0] * GRID[1] + QUERY[1]}
    tokens = page.js("""Array.from(document.querySelectorAll('#prefix-tokens .tok')).map(
        s => [Number(s.dataset.slot), Number(s.dataset.level), s.textContent])""")
    hottest = max(tokens, key=lambda t: t[1])
    assert hottest[0] == HOT_READ_TOKEN and hottest[1] == 255
    assert sorted(t[1] for t in tokens)[-2] < 16
    assert tokens[HOT_READ_TOKEN][2] == EVIL  # the piece as text, never markup
    wrist = to_level(prefix_blocks(page, "left_wrist_0_rgb")[..., :3])
    assert np.unravel_index(wrist.argmax(), wrist.shape) == HOT_READ_PATCH and wrist[HOT_READ_PATCH] == 255
    assert page.js("document.title") != "pwned" and page.js("document.querySelectorAll('#prefix-tokens img').length") == 0
    # call 1 has no prefix side file: the panel goes away; the action tokens' views are as before
    page.page.locator("body").click(position={"x": 5, "y": 5})
    page.page.keyboard.press(".")
    page.settle()
    assert page.js("document.getElementById('prefix-panel').hidden") is True
    assert page.errors == []


def prefix_blocks(page: Page, camera: str) -> np.ndarray:
    """[rows, cols, 4] of a prefix panel canvas: per patch block (mean R, G, B, spread), as Page.blocks."""
    data = page.js("""(cam) => {
        const cv = document.querySelector(`canvas[data-prefix-camera="${cam}"]`);
        const c = pi0viz.meta.calls[pi0viz.state.call].prefix;
        const [rows, cols] = c.grid;
        const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
        const bh = cv.height / rows, bw = cv.width / cols, out = [];
        for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) {
            const s = [0, 0, 0]; let n = 0;
            // the block's inside (the selected patch's outline is drawn on its border)
            for (let y = r * bh + 3; y < (r + 1) * bh - 3; y++) for (let x = k * bw + 3; x < (k + 1) * bw - 3; x++) {
                const i = 4 * (y * cv.width + x);
                for (let ch = 0; ch < 3; ch++) s[ch] += px[i + ch];
                n++;
            }
            out.push([s[0] / n, s[1] / n, s[2] / n, 0]);
        }
        return [rows, cols, out];
    }""", camera)
    rows, cols, flat = data
    return np.asarray(flat, np.float64).reshape(rows, cols, 4)


def test_knockouts_panel_shows_the_tables_and_figures(browser, episode, tmp_path: Path) -> None:
    from pi0viz.core.runs import read_run

    root, _, study = episode
    ep = read_run(root).single_episode("test")
    page_path = write_viewer(ep.bundle_paths, tmp_path / "view.html", heads="none", knockouts=ep.knockouts,
                             knockouts_root=root)
    page = Page(browser, page_path.as_uri())
    assert page.js("document.getElementById('knockouts-panel').hidden") is False
    boxes = page.js("""Array.from(document.querySelectorAll('#knockouts .knockout')).map(b => ({
        kind: b.dataset.kind, title: b.querySelector('h3').textContent,
        rows: Array.from(b.querySelectorAll('tr')).map(tr => Array.from(tr.children).map(c => c.textContent)),
        img: b.querySelector('img') ? b.querySelector('img').naturalWidth : null,
        info: Array.from(b.querySelectorAll('.kinfo')).map(p => p.textContent)}))""")
    by_kind = {b["kind"]: b for b in boxes}
    cond = by_kind["conditions"]
    assert cond["title"] == "knockouts/knockouts.json"
    assert cond["rows"][0] == STUDY_HEADER
    assert cond["rows"][1:] == [condition_row(c) for c in study["conditions"]]
    assert cond["rows"][2][:3] == [EVIL, "keys", "prefix, layer 2"] and cond["rows"][2][4:] == [
        "0.0500 ± 0.0020", "0.0100 ± 0.0010", "5.0×"]
    assert cond["rows"][3][1:3] == ["pixels", "pixel replacement"]
    assert cond["img"] == 40  # the PNG, embedded, decoded by the browser
    assert f"prompt: {EVIL}" in cond["info"]
    curves = by_kind["curves"]
    assert [r[:2] for r in curves["rows"][1:]] == [["1", "step 0, layer 0, max"], ["2", "step 7, layer 2, mean"]]
    assert curves["rows"][2][2:] == ["1.500 ± 0.200", "0.500 ± 0.100", "3.000 ± 0.300", "2.000 ± 0.200"]
    assert by_kind["unreadable"]["info"] == ["knockouts.json: not a readable pi0viz.knockout.conditions/1 file"]
    assert page.js("document.querySelectorAll('#knockouts script, #knockouts td img').length") == 0
    assert page.js("document.title") != "pwned" and page.errors == []
    assert not [u for u in page.requests if not u.startswith(("file:", "data:"))]
