"""Shipped LIBERO frames and the LIBERO preprocessing helpers (no simulator needed)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from extras import require_libero

from pi0viz.policy import libero_env
from pi0viz.policy.libero_frames import FRAMES_DIR, load_libero_frames


def test_shipped_frames_are_model_inputs_from_four_suites() -> None:
    frames = load_libero_frames()
    assert [f.suite for f in frames] == ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
    for f in frames:
        for img in (f.image, f.wrist_image):
            assert img.shape == (224, 224, 3) and img.dtype == np.uint8
            assert img.std() > 10, f"{f.name}: a blank frame"
        assert f.state.shape == (8,) and np.all(np.isfinite(f.state))
        assert f.prompt and f.prompt == f.observation()["prompt"]
    # Different scenes, not one frame four times.
    assert len({f.image.tobytes() for f in frames}) == 4
    total = sum(p.stat().st_size for p in FRAMES_DIR.iterdir())
    assert total < 400_000, f"shipped frames take {total} bytes; keep them small"


def test_frames_state_looks_like_a_libero_robot() -> None:
    for f in load_libero_frames():
        # eef axis-angle of the gripper pointing down is a rotation of ~pi; gripper fingers are symmetric.
        assert 2.5 < np.linalg.norm(f.state[3:6]) < 3.5
        assert f.state[6] == pytest.approx(-f.state[7], abs=1e-3)


def test_manifest_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    shutil.copytree(FRAMES_DIR, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["frames"][0]["image"] = "../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="outside its folder"):
        load_libero_frames(folder)


@pytest.mark.parametrize("axis, angle", [((0, 0, 1), 0.5), ((1, 0, 0), math.pi - 0.01), ((0.6, 0.8, 0), 2.0)])
def test_quat_to_axis_angle(axis, angle) -> None:
    axis = np.asarray(axis, float)
    quat = np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]])  # x, y, z, w
    np.testing.assert_allclose(libero_env.quat_to_axis_angle(quat), axis * angle, atol=1e-9)


def test_quat_identity_is_zero_rotation() -> None:
    np.testing.assert_array_equal(libero_env.quat_to_axis_angle(np.array([0.0, 0, 0, 1])), np.zeros(3))


def test_resize_with_pad_geometry() -> None:
    img = np.full((128, 256, 3), 200, np.uint8)  # wide: bars above and below
    out = libero_env.resize_with_pad(img, 224, 224)
    assert out.shape == (224, 224, 3)
    rows = np.nonzero(out[:, 112, 0])[0]
    assert rows.min() == 56 and rows.max() == 56 + 112 - 1  # 112 rows of image, centered
    # 256 x 256 -> 224 x 224 (LIBERO -> pi0) is a plain resize: no black bars.
    assert np.all(libero_env.resize_with_pad(np.full((256, 256, 3), 9, np.uint8), 224, 224) == 9)


def test_policy_observation_rotates_and_builds_the_state() -> None:
    rng = np.random.default_rng(1)
    raw = {
        "agentview_image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
        "robot0_eef_pos": np.array([0.1, 0.2, 0.3]),
        "robot0_eef_quat": np.array([0.0, 0.0, math.sin(0.25), math.cos(0.25)]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
    }
    obs = libero_env.policy_observation(raw, "put the bowl on the plate")
    np.testing.assert_array_equal(obs["observation/image"], raw["agentview_image"][::-1, ::-1])
    np.testing.assert_array_equal(obs["observation/wrist_image"], raw["robot0_eye_in_hand_image"][::-1, ::-1])
    np.testing.assert_allclose(obs["observation/state"], [0.1, 0.2, 0.3, 0, 0, 0.5, 0.04, -0.04], atol=1e-12)
    assert obs["prompt"] == "put the bowl on the plate"


def test_configure_libero_writes_a_config_without_prompting(tmp_path: Path, monkeypatch) -> None:
    require_libero()
    monkeypatch.delenv("LIBERO_CONFIG_PATH", raising=False)
    cfg = libero_env.configure_libero(tmp_path / "cfg")
    text = (cfg / "config.yaml").read_text()
    entries = dict(line.split(": ", 1) for line in text.splitlines())
    assert set(entries) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}
    for key in ("bddl_files", "init_states", "assets"):
        assert Path(entries[key]).is_dir(), key
