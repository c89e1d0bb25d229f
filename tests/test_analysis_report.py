"""`pi0viz metrics` and `pi0viz report` from the command line, and the report page in headless Chromium."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from bundle_support import small
from click.testing import CliRunner

from pi0viz.analysis.masks import CallMasks, masks_path, save_masks
from pi0viz.cli import main
from pi0viz.core.bundle import save_bundle

PROMPT = 'put the <script>alert("x")</script> bowl & "plate"'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Two episodes of two calls each (one success, one failure), with masks; the first has a viewer page."""
    from pi0viz.viewer import write_viewer

    run = tmp_path_factory.mktemp("run")
    for ep, success in (("ep0", True), ("ep1", False)):
        folder = run / ep
        (folder / "bundles").mkdir(parents=True)
        (folder / "episode.json").write_text(json.dumps({"suite": "libero_spatial", "task_id": 0, "trial": int(ep[-1]),
                                                         "prompt": PROMPT, "success": success}))
        paths = []
        for n in range(2):
            b = small(seed=n + (2 if success else 0))
            b.inference_step = n
            paths.append(save_bundle(b, folder / "bundles" / f"inference_{n:03d}.npz"))
            cov = np.zeros((1, 3, 16, 16), np.float32)
            cov[0, 0, 4:8, 4:8] = 1.0
            save_masks(CallMasks(list(b.camera_names), ["bowl_1"], cov, np.array([True, False, False])),
                       masks_path(paths[-1]))
        if success:
            write_viewer(paths, folder / "viewer.html", heads="none")
    result = CliRunner().invoke(main, ["metrics", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.count("episode metrics:") == 2
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_metrics_files_next_to_the_bundles(run_dir: Path) -> None:
    bundles = run_dir / "ep0" / "bundles"
    record = json.loads((bundles / "inference_001.metrics.json").read_text())
    assert record["call"] == 1 and record["grounding"]["objects"] == ["bowl_1"]
    assert record["grounding"]["cameras"]["base_0_rgb"]["area_share"] == pytest.approx(16 / 256, abs=1e-6)
    assert (bundles / "inference_001.grounding.csv").read_text().count("\n") == 1 + 2 * 3 * 5
    run = json.loads((run_dir / "run_metrics.json").read_text())
    assert (run["success"]["episodes"], run["failure"]["episodes"], run["all"]["successes"]) == (1, 1, 1)


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    for args, expected in ((["metrics", str(tmp_path / "nope.npz")], "no capture bundle at"),
                           (["report", str(tmp_path)], "no episode_metrics.json under")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and expected in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    result = CliRunner().invoke(main, ["metrics", str(tmp_path / "b.npz")])
    assert result.exit_code == 1 and "b.npz" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.browser
def test_report_page_in_chromium(run_dir: Path, browser) -> None:
    page_path = run_dir / "report.html"
    page = browser.new_page()
    requests, dialogs, errors = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.as_uri())
    deadline = time.monotonic() + 20
    while not page.evaluate("[...document.images].every(i => i.complete)") and time.monotonic() < deadline:
        time.sleep(0.05)
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    text = page.evaluate("document.body.innerText")
    links = page.evaluate("[...document.links].map(a => [a.textContent, a.href])")
    assert len(widths) >= 6 and min(widths) > 100  # every plot decoded
    assert requests == [page_path.as_uri()]  # offline: the page alone, plots are data URIs
    assert not dialogs and not errors and not page.evaluate("document.scripts.length")
    assert PROMPT in text  # escaped: shown as text, never run
    assert "success" in text and "failure" in text
    viewer = [href for label, href in links if label == "viewer"]
    assert len(viewer) == 1 and viewer[0].endswith("/ep0/viewer.html")
    page.goto(viewer[0])
    page.wait_for_selector("canvas", timeout=20000)  # the link leads to a working viewer page
    page.close()
