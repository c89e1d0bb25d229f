"""The attention_viz tree: exact contents, resume, full disk, untrusted names, errors, CLI and Python API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from extras import mount_tmpfs, require, unmount
from render_support import GRID, PATCH_PX, block_levels, cell, decode, jpgs, tree_bytes

from pi0viz import visualize_attention
from pi0viz.cli import main
from pi0viz.core.bundle import BundleError, save_bundle
from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
from pi0viz.errors import SelectionError
from pi0viz.render import (
    RenderError,
    RenderOptions,
    parse_selection,
    render_bundle,
    safe_names,
)


def test_tree_has_exactly_D_x_A_x_L_x_regions_files(tmp_path):
    b = synthetic_bundle(num_steps=2, num_layers=3, num_action_tokens=4)
    b.inference_step = 7
    summary = render_bundle(b, tmp_path, RenderOptions(workers=2))
    files = jpgs(tmp_path)
    assert len(files) == 2 * 4 * 3 * (3 + 1) == summary.files_written
    expected = {f"inference_timestep_7/diffusion_timestep_{d}/action_token_{a}/layer_{l}/fused_attention_on_{r}.jpg"
                for d in range(2) for a in range(4) for l in range(3)
                for r in ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb", "text")}
    assert {str(p.relative_to(tmp_path)) for p in files} == expected
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".jpg"] == []  # no temporaries


def test_paths_use_original_step_and_layer_indices_and_selections(tmp_path):
    b = synthetic_bundle(num_steps=3, num_layers=3, num_action_tokens=6)
    b.step_indices = np.array([0, 4, 9], np.int32)
    b.layer_indices = np.array([2, 10, 17], np.int32)
    render_bundle(b, tmp_path, RenderOptions(steps="4-9", action_tokens="0,3-4", layers=[17], cameras="base_0_rgb",
                                             workers=1))
    got = {str(p.relative_to(tmp_path / "inference_timestep_0")) for p in jpgs(tmp_path)}
    assert got == {f"diffusion_timestep_{d}/action_token_{a}/layer_17/fused_attention_on_{r}.jpg"
                   for d in (4, 9) for a in (0, 3, 4) for r in ("base_0_rgb", "text")}
    with pytest.raises(SelectionError, match=r"layers: \[5\] not in this capture, which has 2,10,17"):
        render_bundle(b, tmp_path, RenderOptions(layers="5", workers=1))


def test_masked_camera_writes_no_file(tmp_path):
    b = synthetic_bundle(num_steps=1, num_layers=2, num_action_tokens=2, image_masks=(True, True, False))
    summary = render_bundle(b, tmp_path, RenderOptions(workers=1))
    names = {p.name for p in jpgs(tmp_path)}
    assert names == {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                     "fused_attention_on_text.jpg"}
    assert len(jpgs(tmp_path)) == 1 * 2 * 2 * 3
    assert any("right_wrist_0_rgb" in n for n in summary.notes)


def test_pi05_shaped_call_renders(tmp_path):
    # pi0.5: no state token, 200 prompt slots, 10 action tokens: S = 768 + 200 + 0 + 10 = 978.
    b = synthetic_bundle(num_steps=2, num_layers=2, num_state_tokens=0, num_text_tokens=200, num_valid_text=150,
                         num_action_tokens=10, image_masks=(True, True, False))
    assert b.attention.shape[-2:] == (10, 978)
    summary = render_bundle(b, tmp_path, RenderOptions(action_tokens="0,9", workers=1))
    assert summary.files_written == 2 * 2 * 2 * 3
    text = decode(cell(tmp_path, 1, 9, 1) / "fused_attention_on_text.jpg")
    assert text.shape[0] > 150  # 150 tokens wrap onto many lines


def test_resume_after_killed_cli_gives_the_same_tree(tmp_path):
    b = synthetic_bundle(num_steps=2, num_layers=6, num_action_tokens=30, image_masks=(True, True, False))
    path = save_bundle(b, tmp_path / "call.npz")
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    cmd = [sys.executable, "-m", "pi0viz.cli", "render", str(path), "--no-progress", "--workers", "1"]
    subprocess.run(cmd + ["--out", str(fresh)], check=True, capture_output=True)
    total = len(jpgs(fresh))
    assert total == 2 * 30 * 6 * 3

    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(jpgs(killed)) < total // 4 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(jpgs(killed))
    assert 0 < done < total, "the render finished before it could be killed; make the bundle bigger"
    # A killed writer may leave a temporary; add one by hand too, as a crash mid-write would.
    some_cell = next(p.parent for p in jpgs(killed))
    (some_cell / ".fused_attention_on_text.jpg.12345.tmp").write_bytes(b"partial")

    result = subprocess.run(cmd + ["--out", str(killed), "--resume"], capture_output=True, text=True, check=True)
    assert "resume: kept" in result.stdout
    assert tree_bytes(killed) == tree_bytes(fresh)  # same files, same bytes, no temporaries left


def test_resume_redoes_a_cell_missing_one_file(tmp_path):
    b = synthetic_bundle(num_steps=1, num_layers=2, num_action_tokens=2)
    render_bundle(b, tmp_path, RenderOptions(workers=1))
    before = tree_bytes(tmp_path)
    victim = cell(tmp_path, 0, 1, 1) / "fused_attention_on_left_wrist_0_rgb.jpg"
    victim.unlink()
    summary = render_bundle(b, tmp_path, RenderOptions(workers=1, resume=True))
    assert summary.files_written == 4 and summary.files_skipped == 3 * 4
    assert tree_bytes(tmp_path) == before


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = mount_tmpfs(tmp_path / "disk", "size=1m")
    yield mnt
    unmount(mnt)


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_gives_clear_error_and_keeps_finished_files(tiny_disk, workers):
    b = synthetic_bundle(num_steps=2, num_layers=6, num_action_tokens=10)  # ~5 MB of JPEGs > 1 MiB disk
    with pytest.raises(RenderError, match="disk full.*--resume"):
        render_bundle(b, tiny_disk, RenderOptions(workers=workers))
    files = [p for p in tiny_disk.rglob("*") if p.is_file()]
    assert files, "some files should have fit"
    assert all(p.suffix == ".jpg" and not p.name.startswith(".") for p in files)  # no partial temporaries
    for p in files:
        assert decode(p).shape[1] in (GRID * PATCH_PX, 2 * GRID * PATCH_PX)  # every finished file is whole


def test_full_disk_through_cli_is_one_clean_line(tiny_disk, tmp_path):
    path = save_bundle(synthetic_bundle(num_steps=2, num_layers=6, num_action_tokens=10), tmp_path / "c.npz")
    result = CliRunner().invoke(main, ["render", str(path), "--out", str(tiny_disk), "--no-progress", "--workers", "1"])
    assert result.exit_code == 1
    assert "disk full" in result.output and "Traceback" not in result.output


def test_camera_names_from_data_cannot_escape_the_output_folder(tmp_path):
    evil = ("../../../escaped", "/etc/passwd", "..", "text")
    b = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=1, camera_names=evil)
    out = tmp_path / "out"
    render_bundle(b, out, RenderOptions(workers=1))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 5 and all(out in p.parents for p in written)
    assert sorted(p.name for p in written) == sorted(
        ["fused_attention_on_" + "_" * 6 + "escaped.jpg", "fused_attention_on__etc_passwd.jpg",
         "fused_attention_on__.jpg", "fused_attention_on_text_1.jpg", "fused_attention_on_text.jpg"])
    assert safe_names(["a/b", "a_b", "A_B"]) == ["a_b", "a_b_1", "A_B_2"]


def test_selection_parser():
    assert parse_selection("0,3-5,9", range(10), "steps") == [0, 3, 4, 5, 9]
    assert parse_selection(None, [2, 4], "layers") == [2, 4] == parse_selection("all", [2, 4], "layers")
    assert parse_selection("0-17", [2, 10, 17], "layers") == [2, 10, 17]
    for bad, msg in [("3-1", "backwards"), ("x", "cannot read"), ("11", r"\[11\] not in this capture"),
                     ("20-30", "holds none")]:
        with pytest.raises(ValueError, match=msg):
            parse_selection(bad, range(10), "steps")


def test_errors_are_clear(tmp_path):
    b = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2)
    with pytest.raises(SelectionError, match=r"unknown camera\(s\) \['top'\]"):
        render_bundle(b, tmp_path, RenderOptions(cameras="top", workers=1))
    b.token_mask[:] = False
    with pytest.raises(RenderError, match="prompt is empty"):
        render_bundle(b, tmp_path, RenderOptions(workers=1))
    att = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2).attention
    kw = dict(images=np.zeros((3, 224, 224, 3), np.uint8), camera_names=["a", "b", "c"],
              token_pieces=["<bos>", "▁hi", "\n"] + [""] * 45, inference_step=0, out_dir=tmp_path,
                  options=RenderOptions(workers=1))
    bad = att.copy()
    bad[0, 0, 0, 0, 0, 1, 3] = np.nan
    with pytest.raises(BundleError, match="NaN"):
        visualize_attention(bad, **kw)
    bad = att.copy()
    bad[0, 0, 0, 0, 0, 1, 3] = np.inf
    with pytest.raises(BundleError, match="inf"):
        visualize_attention(bad, **kw)
    with pytest.raises(BundleError, match="has S = 818 keys.*expects S = 819"):
        visualize_attention(att[..., :-1], **kw)
    with pytest.raises(BundleError, match="7-d"):
        visualize_attention(att[0], **kw)
    with pytest.raises(BundleError, match=r"images must be \[B=1, C=3"):
        visualize_attention(att, **{**kw, "images": np.zeros((2, 224, 224, 3), np.uint8)})


def test_unknown_bundle_version_and_bad_input_via_cli(tmp_path):
    arrays = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2).to_arrays()
    arrays["format"] = np.asarray("pi0viz.capture/99")
    np.savez(tmp_path / "future.npz", **arrays)
    runner = CliRunner()
    result = runner.invoke(main, ["render", str(tmp_path / "future.npz"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown bundle format 'pi0viz.capture/99'" in result.output
    assert "Traceback" not in result.output
    path = save_bundle(synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2), tmp_path / "ok.npz")
    result = runner.invoke(main, ["render", str(path), "--out", str(tmp_path / "o"), "--steps", "0,3"])
    assert result.exit_code == 1 and "[3] not in this capture" in result.output


def test_cli_renders_and_summarizes(tmp_path):
    path = save_bundle(synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=3), tmp_path / "c.npz")
    out = tmp_path / "viz"
    result = CliRunner().invoke(main, ["render", str(path), "--out", str(out), "--inference-step", "12",
                                       "--layers", "1", "--scale", "global", "--quality", "70", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 24 files" in result.output and str(out / "inference_timestep_12") in result.output
    assert len(jpgs(out / "inference_timestep_12")) == 2 * 3 * 1 * 4


def test_visualize_attention_api_with_dict_images_batch_and_resize(tmp_path):
    b = synthetic_bundle(num_steps=1, num_layers=2, num_action_tokens=3, batch=2, image_masks=(True, True, False))
    hot = b.layout.camera_region(0).start + 2 * GRID + 5  # patch (2, 5) of base, batch element 1 only
    place_hot_key(b, step=0, layer=1, action_token=1, head=3, key=hot, mass=0.9, batch=1)
    raw = np.zeros((2, 256, 256, 3), np.uint8)  # LIBERO renders 256 x 256: resized with pad to 224
    summary = visualize_attention(
        b.attention, images={"base_0_rgb": raw, "left_wrist_0_rgb": b.images[:, 1]},
        camera_names=b.camera_names, token_pieces=b.token_pieces, token_mask=b.token_mask, inference_step=3,
        out_dir=tmp_path, options=RenderOptions(batch_index=1, alpha=1.0, workers=1))
    assert summary.files_written == 1 * 3 * 2 * 3  # right wrist missing from `images` -> masked, no file
    img = decode(cell(tmp_path, 0, 1, 1, inference=3) / "fused_attention_on_base_0_rgb.jpg")
    lv = block_levels(img)
    assert np.unravel_index(lv.argmax(), lv.shape) == (2, 5) and lv[2, 5] >= 250


def test_workers_after_jax_is_loaded_use_a_forkserver(tmp_path):
    # A LIBERO loop running the model in-process has JAX's threads alive: fork would be unsafe.
    script = tmp_path / "loop.py"
    script.write_text(
        "import sys, jax\n"
        "from pi0viz.render import RenderOptions, render_bundle\n"
        "from pi0viz.core.synthetic import synthetic_bundle\n"
        "if __name__ == '__main__':\n"
        "    b = synthetic_bundle(num_steps=1, num_layers=2, num_action_tokens=2)\n"
        "    s = render_bundle(b, sys.argv[1], RenderOptions(workers=2))\n"
        "    print(s.workers, s.files_written, s.notes)\n")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "o")], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split()[:2] == ["2", "16"], out.stdout + out.stderr
    assert len(jpgs(tmp_path / "o")) == 16


def test_bfloat16_attention_and_odd_image_sizes(tmp_path):
    ml_dtypes = require("ml_dtypes", "jax")  # bfloat16 for numpy, a JAX dependency
    b = synthetic_bundle(num_steps=1, num_layers=1, num_action_tokens=2)
    hot = b.layout.camera_region(1).start + 3 * GRID + 4
    place_hot_key(b, step=0, layer=0, action_token=1, head=0, key=hot, mass=0.7)
    images = np.zeros((3, 200, 300, 3), np.uint8)  # 2:3 frames: padded top and bottom like the model's input
    images[..., 1] = 200
    summary = visualize_attention(b.attention.astype(ml_dtypes.bfloat16), images=images,
                                  camera_names=b.camera_names, token_pieces=b.token_pieces[0],
                                  token_mask=b.token_mask[0], inference_step=0, out_dir=tmp_path,
                                  options=RenderOptions(alpha=1.0, workers=1))
    assert summary.files_written == 2 * 4
    assert sum("resized with padding to 224x224" in n for n in summary.notes) == 3
    img = decode(cell(tmp_path, 0, 1, 0) / "fused_attention_on_left_wrist_0_rgb.jpg")
    assert img.shape[1] == GRID * PATCH_PX
    lv = block_levels(img)
    assert np.unravel_index(lv.argmax(), lv.shape) == (3, 4) and lv[3, 4] >= 250


def test_reduced_capture_heads_fused_on_device_prefix_keys_only(tmp_path):
    # A capture that kept only action rows over prefix keys, heads max-fused on the device (K = G = 1).
    from pi0viz.core.bundle import CaptureBundle

    b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=3)
    hot = b.layout.camera_region(1).start + 7 * GRID + 7
    place_hot_key(b, step=1, layer=1, action_token=2, head=5, key=hot, mass=0.9)
    lay = b.layout
    att = b.attention[:, :, :, :, :, lay.action_queries(), :lay.num_prefix_keys].max(axis=(3, 4), keepdims=True)
    reduced = CaptureBundle(attention=att, camera_names=b.camera_names, images=b.images, image_masks=b.image_masks,
                            token_ids=b.token_ids, token_pieces=b.token_pieces, token_mask=b.token_mask,
                            num_state_tokens=1, num_action_tokens=3, diffusion_times=b.diffusion_times,
                            attention_heads="max", attention_queries="actions", attention_keys="prefix")
    from pi0viz.render import RenderJob

    a = RenderJob(b, str(tmp_path / "full"), 0, RenderOptions(workers=1))
    r = RenderJob(reduced, str(tmp_path / "reduced"), 0, RenderOptions(workers=1))
    np.testing.assert_array_equal(a.levels, r.levels)  # the same maps
    np.testing.assert_array_equal(a.peaks, r.peaks)
    assert (r.mass >= a.mass - 1e-6).all()  # fused on device: "mass" sums the max over heads (an upper bound)
    render_bundle(reduced, tmp_path / "reduced", RenderOptions(workers=1, alpha=1.0))
    lv = block_levels(decode(cell(tmp_path / "reduced", 1, 2, 1) / "fused_attention_on_left_wrist_0_rgb.jpg"))
    assert np.unravel_index(lv.argmax(), lv.shape) == (7, 7)
