"""`pi0viz render` on a pi0-FAST decoding bundle (pi0viz.capture/2): the decode_step_J/layer_L tree, the flags
that apply (decode steps, layers, cameras, scales, quality, zoom, resume) and one-line refusals of pi0's own.
Real .npz and JPEG files; hot keys planted at known places."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.core.decode_bundle import save_decode_bundle
from pi0viz.core.synthetic import place_hot_decode_key, synthetic_decode_bundle

CAMS = ("base_0_rgb", "left_wrist_0_rgb")
GRID = (4, 4)
HOT = dict(step=2, layer=1, camera=1, patch=5)  # wrist camera, row 1, col 1
FILES = {f"fused_attention_on_{n}.jpg" for n in (*CAMS, "text", "generated")}


@pytest.fixture()
def bundle_path(tmp_path: Path) -> Path:
    b = synthetic_decode_bundle(num_steps=4, num_layers=2, num_heads=2, camera_names=CAMS, patch_grid=GRID,
                                image_size=56, num_text_tokens=8, num_valid_text=5, inference_step=7)
    place_hot_decode_key(b, step=HOT["step"], layer=HOT["layer"], head=0,
                         key=HOT["camera"] * GRID[0] * GRID[1] + HOT["patch"], mass=0.95)
    return save_decode_bundle(b, tmp_path / "inference_007.npz")


def _render(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["render", *map(str, args), "--no-progress"])
    return result.exit_code, result.output


def _gray(path: Path) -> np.ndarray:
    return simplejpeg.decode_jpeg(path.read_bytes()).astype(np.float32).mean(-1)


def test_render_writes_the_decode_tree_with_the_chosen_steps_layers_and_cameras(bundle_path: Path,
                                                                               tmp_path: Path) -> None:
    code, out = _render(bundle_path, "--out", tmp_path / "all")
    assert code == 0, out
    root = tmp_path / "all" / "inference_timestep_7"
    cells = sorted(str(p.relative_to(root)) for p in root.glob("*/*"))
    assert cells == [f"decode_step_{j}/layer_{l}" for j in range(4) for l in range(2)]
    assert all({f.name for f in (root / c).iterdir()} == FILES for c in cells)
    assert not list(root.glob("diffusion_timestep_*"))
    # the planted key is the hottest patch of the wrist camera in its cell (alpha 1: the colormap alone)
    code, out = _render(bundle_path, "--out", tmp_path / "hot", "--alpha", "1", "--steps", str(HOT["step"]),
                        "--layers", str(HOT["layer"]), "--cameras", CAMS[1], "--inference-step", "3")
    assert code == 0, out
    cell = tmp_path / "hot" / "inference_timestep_3" / f"decode_step_{HOT['step']}" / f"layer_{HOT['layer']}"
    assert {f.name for f in cell.iterdir()} == {f"fused_attention_on_{CAMS[1]}.jpg", "fused_attention_on_text.jpg",
                                                 "fused_attention_on_generated.jpg"}
    heat = _gray(cell / f"fused_attention_on_{CAMS[1]}.jpg")[:56, :56].reshape(4, 14, 4, 14)[:, 3:11, :, 3:11]
    blocks = heat.mean(axis=(1, 3))
    assert np.unravel_index(np.argmax(blocks), blocks.shape) == divmod(HOT["patch"], GRID[1])


def test_scale_quality_and_resume_flags_apply(bundle_path: Path, tmp_path: Path) -> None:
    sel = ["--steps", str(HOT["step"]), "--layers", str(HOT["layer"]), "--alpha", "1"]
    name = f"inference_timestep_7/decode_step_{HOT['step']}/layer_{HOT['layer']}/fused_attention_on_{CAMS[0]}.jpg"
    outs = {}
    for scale in ("cell", "region", "global"):
        code, out = _render(bundle_path, "--out", tmp_path / scale, "--scale", scale, *sel)
        assert code == 0, out
        outs[scale] = _gray(tmp_path / scale / name)[:56, :56]
    # the base camera is cold next to the planted wrist key under the shared cell scale; its own (region) scale
    # lifts it to the top of the colormap
    assert outs["region"].max() > outs["cell"].max() + 40
    code, out = _render(bundle_path, "--out", tmp_path / "log", "--log-decades", "3", *sel)
    assert code == 0, out
    assert _gray(tmp_path / "log" / name)[:56, :56].mean() > outs["cell"].mean() + 20  # log lifts faint attention
    code, out = _render(bundle_path, "--out", tmp_path / "q", "--quality", "20", *sel)
    assert code == 0 and (tmp_path / "q" / name).stat().st_size < (tmp_path / "cell" / name).stat().st_size
    code, out = _render(bundle_path, "--out", tmp_path / "cell", "--resume", *sel)  # everything already there
    assert code == 0 and "wrote 0 files" in out, out


@pytest.mark.parametrize("flag", [["--action-tokens", "0"], ["--per-head"], ["--composite"], ["--exclude-sinks"],
                                  ["--workers", "2"]])
def test_pi0_only_flags_are_refused_in_one_line(bundle_path: Path, tmp_path: Path, flag: list[str]) -> None:
    code, out = _render(bundle_path, "--out", tmp_path / "x", *flag)
    assert code == 1 and flag[0] in out and "decoding bundle" in out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
    assert not (tmp_path / "x").exists()


def test_a_bad_selection_is_one_line(bundle_path: Path, tmp_path: Path) -> None:
    code, out = _render(bundle_path, "--out", tmp_path / "x", "--steps", "9")
    assert code == 1 and len(out.strip().splitlines()) == 1 and "decode steps" in out, out
