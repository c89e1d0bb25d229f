"""Summary maps in the viewer (headless Chromium): the page's reduced maps equal numpy's reduction of the same
decoded data, and a hot spot planted in every action token of one step and layer lights up its patch."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
from pi0viz.viewer import write_viewer
from pi0viz.viewer.data import call_arrays, decode_fused

HOT = 4 * 16 + 11  # base camera patch (4, 11)
pytestmark = pytest.mark.browser


def open_page(browser, url: str):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url)
    deadline = time.monotonic() + 20
    while not pg.evaluate("document.documentElement.dataset.ready === '1'"):
        assert time.monotonic() < deadline, "viewer never became ready"
        time.sleep(0.05)
    return pg, errors


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    b = synthetic_bundle(num_steps=3, num_layers=4, num_action_tokens=6)
    for a in range(6):
        place_hot_key(b, step=2, layer=1, action_token=a, head=5, key=HOT, mass=0.9)
    out = tmp_path_factory.mktemp("view") / "view.html"
    write_viewer([b], out, heads="none")
    pg, errors = open_page(browser, out.as_uri())
    return pg, decode_fused(call_arrays(b)), errors


def show(pg, **state) -> np.ndarray:
    pg.evaluate("(s) => pi0viz.set(s)", state)
    return np.asarray(pg.evaluate("Array.from(pi0viz.view.values)"), np.float64)


def test_summaries_equal_numpy_reductions_of_the_page_data(page) -> None:
    pg, fused, errors = page  # fused: float32 [D, L, A, R] exactly as the page decodes it
    np.testing.assert_allclose(show(pg, sum="tokens", d=2, l=1), fused[2, 1].mean(axis=0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(show(pg, sum="tokens-max", d=0, l=3), fused[0, 3].max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(show(pg, sum="tokens+steps", l=1), fused[:, 1].mean(axis=(0, 1)), rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_allclose(show(pg, sum="all"), fused.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-9)
    assert pg.evaluate("document.getElementById('s-token').disabled && document.getElementById('s-layer').disabled")
    assert "sum=all" in pg.evaluate("new Promise(r => setTimeout(() => r(location.hash), 400))")
    assert not errors


def test_hot_spot_of_every_token_tops_the_token_summary_and_nothing_else(page) -> None:
    pg, _, errors = page
    values = show(pg, sum="tokens", d=2, l=1, scope="cell")
    levels = np.asarray(pg.evaluate("Array.from(pi0viz.view.levels)"))
    assert values.argmax() == HOT and levels[HOT] == 255
    assert values[HOT] == pytest.approx(0.9, rel=0.01)  # max over heads 0.9 in every token: the mean is 0.9
    assert show(pg, sum="tokens", d=1, l=1)[HOT] < 0.01  # other steps: a thin spread, no hot spot
    show(pg, sum="none", d=2, l=1, a=3)
    assert not pg.evaluate("document.getElementById('s-token').disabled")
    assert not errors


def test_exclude_sinks_in_the_viewer(browser, tmp_path) -> None:
    """A sink planted at 0.6 of every action row: with 'exclude sinks' the scale ignores it, a hot patch at 0.1
    becomes the top color, and the sink token is outlined."""
    b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=5)
    bos = b.layout.text_region.start
    q = b.layout.action_queries()
    att = b.attention[:, :, :, :, :, q].astype(np.float64)
    att[..., bos] = 0
    att *= 0.4 / att.sum(-1, keepdims=True)
    att[..., bos] = 0.6
    b.attention[:, :, :, :, :, q] = att.astype(np.float32)
    for head in range(8):
        place_hot_key(b, step=1, layer=0, action_token=2, head=head, key=HOT, mass=0.1)
    out = tmp_path / "sinks.html"
    write_viewer([b], out, heads="none")
    keys = call_arrays(b).drawn_keys
    r_bos = int(np.flatnonzero(keys == bos)[0])
    pg, errors = open_page(browser, out.as_uri() + "#d=1&l=0&a=2")
    plain = pg.evaluate("Array.from(pi0viz.view.levels)")
    show(pg, sinks=True)
    excluded = pg.evaluate("Array.from(pi0viz.view.levels)")
    sinks = pg.evaluate("Array.from(pi0viz.view.sinks)")
    classes = pg.evaluate("[...document.querySelectorAll('#tokens .tok')].map(s => s.classList.contains('sink'))")
    assert not errors
    assert plain[HOT] < 60 and excluded[HOT] == 255  # the hot patch is the top color once the sink is left out
    assert np.flatnonzero(sinks).tolist() == [r_bos] and excluded[r_bos] == 255  # the sink: clipped at the top
    assert classes[0] and not any(classes[1:])  # BOS (the first drawn token) outlined, nothing else
