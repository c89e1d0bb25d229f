"""Issue 23 end to end on a real LIBERO episode: examples/libero/main.py with the tiny pi0 and --prefix-attention
saves one call (bundle, its request, its prefix attention); `pi0viz knockout --bundle` runs key sets on that call;
`pi0viz report EP` and `pi0viz view EP` show the knockout table, and the viewer's prefix panel draws the call's
prefix attention. Checked in a headless Chromium against the files themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from extras import require_libero
from test_viewer_browser import Page

from pi0viz.cli import main

pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()


def _cli(*args: str | Path) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_knockout_report_and_prefix_panel_on_a_libero_episode(example, scene, browser, tmp_path: Path) -> None:
    from pi0viz.causal.observation import load_observation
    from pi0viz.core.bundle import load_bundle
    from pi0viz.core.prefix_bundle import load_prefix
    from pi0viz.core.runs import read_run
    from pi0viz.policy.jax_policy import Policy
    from pi0viz.viewer.knockouts import condition_row
    from pi0viz.viewer.prefix import dequantize_rows, prefix_arrays

    env, prompt, init_state = scene
    args = example.Args(policy="tiny", max_inference_calls=1, bundles_only=True, fuse_heads=True,
                        prefix_attention=True, num_steps_wait=2)
    ep = tmp_path / "libero_spatial_task0_ep0"
    start = time.monotonic()
    result = example.run_episode(env, init_state, prompt, example.InProcessPolicy(Policy.tiny(seed=0)), args, ep,
                                 max_steps=5)
    assert result.error is None, result.error
    episode_s = time.monotonic() - start
    bundles = ep / "bundles"
    assert sorted(p.name for p in bundles.iterdir()) == [
        "inference_000.npz", "inference_000.observation.npz", "inference_000.prefix.npz"]
    call = read_run(ep).single_episode("test").calls[0]
    assert call.prefix == bundles / "inference_000.prefix.npz"
    assert call.observation == bundles / "inference_000.observation.npz"
    bundle, prefix = load_bundle(call.path), load_prefix(call.prefix)
    request = load_observation(call.observation)
    assert request["prompt"] == prompt == str(bundle.prompt[0]) == prefix.prompt
    assert request["observation/state"].shape == (8,)
    np.testing.assert_array_equal(request["observation/image"], bundle.images[0, 0])
    np.testing.assert_array_equal(prefix.images, bundle.images[0])  # the prefix saw what the call saw
    assert prefix.inference_step == 0 and prefix.image_masks.tolist() == [True, True, False]

    # key sets on the saved call (the state from its observation side file)
    start = time.monotonic()
    _cli("knockout", "--policy", "tiny", "--bundle", call.path, "--remove", "camera:left_wrist_0_rgb",
         "--remove", "top:8", "--where", "all", "--method", "keys", "--noise-draws", "1", "--draws", "2",
         "--out", ep / "knockouts")
    knockout_s = time.monotonic() - start
    study = json.loads((ep / "knockouts" / "knockouts.json").read_text())
    sets = [c["set"] for c in study["conditions"]]
    assert len(sets) == 2 and sets[0] == "camera left_wrist_0_rgb"
    assert study["observation"] == f"bundle {call.path}" and study["prompt"] == prompt

    _cli("report", ep)  # the episode has no metrics: a page with the knockouts
    report = (ep / "report.html").read_text(encoding="utf-8")
    for c in study["conditions"]:
        m = c["mean_abs_delta"]
        assert f"{m['mean']:.4f} ± {m['se']:.4f}" in report
    assert "camera left_wrist_0_rgb" in report and "data:image/png;base64," in report

    out = _cli("view", ep, "--out", ep / "viewer.html", "--heads", "none")
    assert "prefix attention of 1 call(s), 1 knockout result(s)" in out
    page = Page(browser, (ep / "viewer.html").as_uri() + "#alpha=1")
    rows = page.js("""Array.from(document.querySelectorAll('#knockouts .knockout[data-kind="conditions"] tr'))
        .slice(1).map(tr => Array.from(tr.children).map(c => c.textContent))""")
    assert rows == [condition_row(c) for c in study["conditions"]]
    assert page.js("document.querySelector('#knockouts img').naturalWidth") > 100  # knockouts.png, embedded

    # the prefix panel: a prompt token's row on each camera, then a patch's row over the prompt, as in the file
    arrays = prefix_arrays(prefix)
    n = prefix.num_patches
    layer, k = len(arrays.layers) - 1, len(arrays.slots) - 1  # the last layer, the last prompt token
    page.page.locator("#s-player").fill(str(layer))
    page.page.locator(f'#prefix-tokens .tok[data-slot="{arrays.slots[k]}"]').click()
    row = dequantize_rows(arrays.blocks["pp"], arrays.blocks["ppm"])[layer, k]
    for c, cam in enumerate(arrays.cameras):
        part = row[c * n:(c + 1) * n]
        want = np.floor(part * (255 / part.max()) + 0.5)
        got = np.asarray(page.js(f"pi0viz.prefix.view.levels['{cam}']"))
        assert np.abs(got - want).max() <= 1 and got.argmax() == want.argmax(), cam
        exact = prefix.prompt_to_image[layer, arrays.slots[k], c * n:(c + 1) * n].astype(np.float32)
        assert got.argmax() == exact.argmax()  # the hottest patch is the file's, before quantization too
    canvas = page.page.locator('canvas[data-prefix-camera="base_0_rgb"]')
    box = canvas.bounding_box()
    canvas.click(position={"x": 5.5 * box["width"] / 16, "y": 9.5 * box["height"] / 16})
    assert page.js("pi0viz.prefix.view.patch") == 9 * 16 + 5
    reads = dequantize_rows(arrays.blocks["pq"], arrays.blocks["pqm"])[layer, 9 * 16 + 5]
    want = np.floor(reads * (255 / reads.max()) + 0.5)
    assert np.abs(np.asarray(page.js("pi0viz.prefix.view.tokenLevels")) - want).max() <= 1
    assert page.errors == []
    print(f"episode {episode_s:.1f} s, knockout {knockout_s:.1f} s")


@pytest.mark.parametrize("argv, expect", [
    (["--policy", "server"], "not a policy server|in this process"),
    (["--policy", "tiny", "--config", "pi0_fast_libero"], "not pi0-FAST"),
    (["--policy", "tiny", "--no-attention"], "drop --no-attention"),
])
def test_prefix_attention_is_refused_in_one_line_for_other_policies(argv, expect, tmp_path: Path) -> None:
    """`python examples/libero/main.py ... --prefix-attention`: one line, exit 1, before the simulator starts."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "examples" / "libero" / "main.py"), *argv, "--prefix-attention",
                           "--attention-out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                          cwd=root)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--prefix-attention" in proc.stderr
    import re

    assert re.search(expect, proc.stderr), proc.stderr
    assert not (tmp_path / "out").exists()
