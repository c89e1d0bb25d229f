"""`pi0viz demo` as users run it: a subprocess, the tiny pi0 on the shipped LIBERO frames, then its outputs."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pi0viz.core.bundle import load_bundle
from pi0viz.policy.libero_frames import load_frames

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FILES_PER_CELL = {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                  "fused_attention_on_text.jpg"}


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
        # tiny pi0: 10 denoising steps x 50 action tokens x 4 layers
        assert len(cells) == 10 * 50 * 4
        assert {c.parent.parent.name for c in cells} == {f"diffusion_timestep_{d}" for d in range(10)}
        for cell in cells[::97]:
            assert {f.name for f in cell.iterdir()} == FILES_PER_CELL


def test_demo_bundles_hold_the_shipped_frames(demo) -> None:
    out, _ = demo
    frames = load_frames()
    for call in (0, 1):
        bundle = load_bundle(out / "bundles" / f"inference_{call:03d}.npz")
        assert bundle.inference_step == call
        assert bundle.attention.shape == (10, 4, 1, 1, 8, 51, 867) and bundle.attention.dtype == np.float16
        assert str(bundle.prompt[0]) == frames[call].prompt
        np.testing.assert_array_equal(bundle.images[0, 0], frames[call].image)
        np.testing.assert_array_equal(bundle.images[0, 1], frames[call].wrist_image)
        assert bundle.actions.shape == (1, 50, 7)


def test_demo_viewer_page_is_written(demo) -> None:
    out, _ = demo
    page = out / "viewer.html"
    text = page.read_text()
    assert "<html" in text.lower()
    assert html.escape(load_frames()[0].prompt) in text or load_frames()[0].prompt in text


def test_demo_output_is_honest_and_ends_with_where_to_look(demo) -> None:
    out, stdout = demo
    assert "UNTRAINED tiny pi0" in stdout and "not what a trained pi0 attends to" in stdout
    assert "--checkpoint DIR --tokenizer" in stdout
    tail = stdout.strip().splitlines()[-6:]
    assert any("Look at" in line for line in tail)
    assert any(str(out / "viewer.html") in line for line in tail)
    assert any(str(out / "attention_viz") in line for line in tail)
