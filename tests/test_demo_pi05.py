"""`pi0viz demo --model pi05` as users run it: the tiny pi0.5 (pi05_libero pipeline) on a shipped LIBERO frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_demo import FILES_PER_CELL, run_pi0viz

from pi0viz.core.bundle import load_bundle
from pi0viz.policy.libero_frames import load_libero_frames

pytestmark = pytest.mark.slow


def test_demo_pi05(tmp_path: Path) -> None:
    out = tmp_path / "demo05"
    proc = run_pi0viz("demo", "--model", "pi05", "--calls", "1", "--steps", "0,9", "--layers", "3", "--no-viewer",
                      "--out", str(out))
    assert "UNTRAINED tiny pi0.5" in proc.stdout and "not what a trained pi0.5 attends to" in proc.stdout
    assert "--model pi05 --checkpoint DIR" in proc.stdout
    bundle = load_bundle(out / "bundles" / "inference_000.npz")
    # tiny pi0.5: 10 steps, 4 layers, 8 heads, 10 action queries (no state token), 3 x 256 + 200 + 10 keys
    assert bundle.attention.shape == (10, 4, 1, 1, 8, 10, 978) and bundle.num_state_tokens == 0
    assert bundle.actions.shape == (1, 10, 7)
    frame = load_libero_frames()[0]
    np.testing.assert_array_equal(bundle.images[0, 0], frame.image)
    assert str(bundle.prompt[0]) == frame.prompt
    cells = sorted((out / "attention_viz" / "inference_timestep_0").glob("diffusion_timestep_*/action_token_*/layer_*"))
    assert len(cells) == 2 * 10 * 1  # steps 0 and 9, all 10 action tokens, layer 3
    assert {c.parent.name for c in cells} == {f"action_token_{a}" for a in range(10)}
    for cell in cells:
        assert {f.name for f in cell.iterdir()} == FILES_PER_CELL
