"""`pi0viz demo` as users run it: a subprocess, reach-tiny (the shipped trained pi0) on its held-out scenes, and
`--untrained` (random weights) on the shipped LIBERO frames, then their outputs."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pi0viz.analysis.masks import load_masks, masks_path
from pi0viz.core.bundle import load_bundle
from pi0viz.demo import demo_reach_scenes
from pi0viz.policy.libero_frames import load_libero_frames

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FILES_PER_CELL = {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                  "fused_attention_on_text.jpg"}
REACH_FILES_PER_CELL = {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_text.jpg"}  # one camera


def _pi0viz() -> list[str]:
    script = Path(sys.executable).parent / "pi0viz"
    return [str(script)] if script.exists() else [shutil.which("pi0viz") or sys.executable, "-m", "pi0viz.cli"]


def run_pi0viz(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`pi0viz ARGS` as a user runs it (a subprocess from the repo root); asserts exit 0."""
    proc = subprocess.run([*_pi0viz(), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "pi0viz_demo"
    return out, run_pi0viz("demo", "--out", str(out)).stdout


def test_demo_tree_has_every_cell_of_both_calls(demo) -> None:
    out, _ = demo
    tree = out / "attention_viz"
    assert sorted(p.name for p in tree.iterdir()) == ["inference_timestep_0", "inference_timestep_1"]
    for call in (0, 1):
        cells = [p for p in (tree / f"inference_timestep_{call}").glob("diffusion_timestep_*/action_token_*/layer_*")]
        # reach-tiny: 10 denoising steps x 10 action tokens x 4 layers
        assert len(cells) == 10 * 10 * 4
        assert {c.parent.parent.name for c in cells} == {f"diffusion_timestep_{d}" for d in range(10)}
        for cell in cells[::37]:
            assert {f.name for f in cell.iterdir()} == REACH_FILES_PER_CELL


def test_demo_bundles_hold_the_heldout_scenes_and_their_masks(demo) -> None:
    out, _ = demo
    scenes = demo_reach_scenes()
    for call in (0, 1):
        path = out / "bundles" / f"inference_{call:03d}.npz"
        bundle = load_bundle(path)
        scene, _, masks = scenes[call]
        assert bundle.inference_step == call
        # 10 steps, 4 layers, B, K = 1, G = 2 heads; 1 state + 10 action queries; 256 patches + 16 prompt + 11 keys
        assert bundle.attention.shape == (10, 4, 1, 1, 2, 11, 283) and bundle.attention.dtype == np.float16
        assert str(bundle.prompt[0]) == scene.prompt and scene.prompt.startswith("reach the ")
        np.testing.assert_array_equal(bundle.images[0, 0], scene.image)
        assert bundle.actions.shape == (1, 10, 7)
        saved = load_masks(masks_path(path))
        assert saved.objects == [scene.prompt.removeprefix("reach the ")]
        np.testing.assert_array_equal(saved.coverage, masks.coverage)


def test_demo_viewer_page_is_written(demo) -> None:
    out, _ = demo
    page = out / "viewer.html"
    text = page.read_text()
    assert "<html" in text.lower()
    prompt = demo_reach_scenes()[0][0].prompt
    assert html.escape(prompt) in text or prompt in text


def test_demo_output_says_what_the_model_is_and_ends_with_where_to_look(demo) -> None:
    out, stdout = demo
    assert "reach-tiny" in stdout and "held-out scenes" in stdout and "--untrained" in stdout
    assert "UNTRAINED" not in stdout
    tail = stdout.strip().splitlines()[-6:]
    assert any("Look at" in line for line in tail)
    assert any(str(out / "viewer.html") in line for line in tail)
    assert any(str(out / "attention_viz") in line for line in tail)


def test_demo_metrics_find_the_named_object(demo, tmp_path) -> None:
    """`pi0viz metrics` on the demo's bundles reads the masks written next to them and measures the named object
    (the grounding claim itself is tested in test_training_reach_model.py over all shipped held-out scenes)."""
    out, _ = demo
    run_pi0viz("metrics", str(out / "bundles"), "--require-masks", "--no-csv", timeout=300)
    for call in (0, 1):
        metrics = json.loads((out / "bundles" / f"inference_{call:03d}.metrics.json").read_text())
        camera = metrics["grounding"]["cameras"]["base_0_rgb"]
        assert 0 < camera["area_share"] < 0.2  # one object's share of the agentview's patches
        assert len(camera["by_layer"]["lift"]) == 4 and len(camera["by_step"]["lift"]) == 10


def test_demo_untrained_runs_random_weights_on_the_libero_frames(tmp_path) -> None:
    out = tmp_path / "untrained"
    proc = run_pi0viz("demo", "--untrained", "--calls", "1", "--steps", "9", "--layers", "3", "--no-viewer",
                      "--out", str(out))
    assert "UNTRAINED tiny pi0" in proc.stdout and "not what a trained pi0 attends to" in proc.stdout
    assert "--checkpoint DIR --tokenizer" in proc.stdout
    bundle = load_bundle(out / "bundles" / "inference_000.npz")
    frame = load_libero_frames()[0]
    assert bundle.attention.shape == (10, 4, 1, 1, 8, 51, 867)
    assert str(bundle.prompt[0]) == frame.prompt
    np.testing.assert_array_equal(bundle.images[0, 0], frame.image)
    np.testing.assert_array_equal(bundle.images[0, 1], frame.wrist_image)
    cells = list((out / "attention_viz" / "inference_timestep_0").glob("diffusion_timestep_*/action_token_*/layer_*"))
    assert len(cells) == 50 and all({f.name for f in c.iterdir()} == FILES_PER_CELL for c in cells[::7])
