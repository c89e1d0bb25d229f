"""pi0-FAST's decoding bundle (pi0viz.capture/2), its fused maps and tree, and `pi0viz demo --model pi0-fast`.

A decoding bundle built by hand (aligned kv-cache slots, one planted hot key) must light up the right camera patch
after the slots are mapped back; the demo's tiny untrained pi0-FAST must write the decode_step_J/layer_L tree and
bundles that reload."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from click.testing import CliRunner

from pi0viz.core.bundle import load_bundle
from pi0viz.core.decode_bundle import DECODE_FORMAT, DecodeBundle, load_decode_bundle, save_decode_bundle
from pi0viz.core.maps import decode_maps
from pi0viz.errors import BundleError
from pi0viz.render import RenderOptions, render_decode_bundle

ROWS = COLS = 4  # 4 x 4 patches of 14 px: 56 x 56 images
CAMS = ("base_0_rgb", "left_wrist_0_rgb")
T, VALID = 6, 4  # prompt slots, valid ones
JG, L = 3, 2  # generated tokens, layers
P = len(CAMS) * ROWS * COLS + T
HOT_CAMERA, HOT_PATCH = 1, 2 * COLS + 3  # camera 1, row 2, col 3
HOT_STEP, HOT_LAYER = 1, 1


def hand_bundle() -> DecodeBundle:
    """A decoding bundle laid out as pi0_fast.sample_tokens lays out its cache (left-to-right alignment)."""
    valid = np.ones(P, bool)
    valid[len(CAMS) * ROWS * COLS + VALID:] = False  # the prompt's padding
    shift = 1 + int(np.flatnonzero(valid)[-1])
    source = (np.arange(P) + shift) % P  # aligned slot s holds unaligned prefix index source[s]
    prefix_start = P - int(valid.sum())
    att = np.zeros((JG, L, 1, 1, 2, 1, P + JG), np.float32)  # [J, L, B, K, G, 1, S]
    for j in range(JG):
        n = P + j + 1 - prefix_start
        att[j, ..., prefix_start:P + j + 1] = 1.0 / n
    hot_slot = int(np.flatnonzero(source == HOT_CAMERA * ROWS * COLS + HOT_PATCH)[0])
    row = att[HOT_STEP, HOT_LAYER, 0, 0, 1, 0]  # head 1
    row[prefix_start:P + HOT_STEP + 1] = 0.1 / (P + HOT_STEP - prefix_start)
    row[hot_slot] += 0.9
    rng = np.random.default_rng(0)
    pieces = np.array([["<bos>", "pick", " up", ";", "", ""]])
    return DecodeBundle(
        attention=att, camera_names=list(CAMS),
        images=rng.integers(0, 255, (1, len(CAMS), ROWS * 14, COLS * 14, 3), dtype=np.uint8),
        image_masks=np.ones((1, len(CAMS)), bool),
        token_ids=np.array([[2, 10, 11, 12, 0, 0]], np.int32), token_pieces=pieces,
        token_mask=np.arange(T)[None] < VALID,
        generated_ids=np.array([[256000, 256001, 1]], np.int32),
        key_len=P + 1 + np.arange(JG, dtype=np.int32), prefix_start=np.array([prefix_start], np.int32),
        key_source=source[None].astype(np.int32), patch_grid=(ROWS, COLS),
        generated_pieces=np.array([["a", "b", "<eos>"]]), prompt=np.array(["pick up"]), inference_step=3)


def test_hot_key_maps_back_to_its_camera_patch() -> None:
    maps = decode_maps(hand_bundle())
    assert maps.drawn.camera_names == list(CAMS)
    assert maps.drawn.text_pieces == ["<bos>", "pick", " up", ";"]
    hot = int(np.argmax(maps.fused[HOT_STEP, HOT_LAYER]))
    name, start, stop = maps.regions[HOT_CAMERA]
    assert name == CAMS[HOT_CAMERA] and hot == start + HOT_PATCH
    assert maps.fused[HOT_STEP, HOT_LAYER, hot] > 0.9
    # the generated map: step j sees tokens 0..j, nothing after
    assert (maps.generated[0, :, 1:] == 0).all() and (maps.generated[2, :, :3] > 0).all()
    assert maps.fused.shape == (JG, L, len(CAMS) * ROWS * COLS + VALID)


def test_tree_lights_up_the_planted_patch(tmp_path: Path) -> None:
    summary = render_decode_bundle(hand_bundle(), tmp_path, RenderOptions(alpha=1.0))
    root = tmp_path / "inference_timestep_3"
    assert summary.out_dir == str(root) and summary.cells == JG * L
    names = {f"fused_attention_on_{n}.jpg" for n in (*CAMS, "text", "generated")}
    for j in range(JG):
        for layer in range(L):
            cell = root / f"decode_step_{j}" / f"layer_{layer}"
            assert {p.name for p in cell.iterdir()} == names
            for name in names:
                assert simplejpeg.decode_jpeg((cell / name).read_bytes()).ndim == 3
    image = simplejpeg.decode_jpeg((root / f"decode_step_{HOT_STEP}" / f"layer_{HOT_LAYER}" /
                                    f"fused_attention_on_{CAMS[HOT_CAMERA]}.jpg").read_bytes())
    heat = image[:ROWS * 14, :COLS * 14].astype(np.float32).mean(axis=-1)  # alpha 1: the colormap alone
    blocks = heat.reshape(ROWS, 14, COLS, 14)[:, 3:11, :, 3:11].mean(axis=(1, 3))
    assert np.unravel_index(np.argmax(blocks), blocks.shape) == divmod(HOT_PATCH, COLS)
    # no pi0 folders in a decoding tree
    assert not list(root.glob("diffusion_timestep_*"))


def test_bundle_round_trip_and_versioning(tmp_path: Path) -> None:
    bundle = hand_bundle()
    path = save_decode_bundle(bundle, tmp_path / "inference_003.npz")
    back = load_decode_bundle(path)
    for field in dataclasses.fields(DecodeBundle):
        a, b = getattr(bundle, field.name), getattr(back, field.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b, field.name
    with np.load(path) as npz:
        assert str(npz["format"]) == DECODE_FORMAT and str(npz["call_kind"]) == "decoding"
    with pytest.raises(BundleError, match="unknown bundle format.*load_decode_bundle") as err:
        load_bundle(path)  # pi0viz.capture/1's reader refuses the new kind in one line, saying where to read it
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, match", [
    (dict(attention=np.zeros((3, 2, 1, 1, 2, 1, 10), np.float32)), "expect S ="),
    (dict(key_source=np.zeros((1, P), np.int32)), "permutation"),
    (dict(step_indices=np.array([0, 1, 5], np.int32)), "step_indices go up to"),
    (dict(key_len=np.array([P, P + 1, P + 2], np.int32)), "key_len must lie"),
    (dict(attention_heads="max"), "K = G = 1"),
])
def test_validation_is_one_line(change: dict, match: str) -> None:
    fields = {f.name: getattr(hand_bundle(), f.name) for f in dataclasses.fields(DecodeBundle)}
    fields.update(change)
    with pytest.raises(BundleError, match=match) as err:
        DecodeBundle(**fields)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_demo_pi0_fast_writes_the_tree_and_bundles(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    pytest.importorskip("sentencepiece")
    from pi0viz.demo import demo_command, run_fast_demo

    lines: list[str] = []
    result = run_fast_demo(tmp_path / "demo", calls=1, steps="0,5", layers="0,3", echo=lines.append)
    assert result.viewer == tmp_path / "demo" / "viewer.html"  # the viewer page, with a decode-step slider
    text = result.viewer.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)[1])
    assert meta["kind"] == "decoding" and [c["source"] for c in meta["calls"]] == ["inference_000.npz"]
    assert meta["tree"]["kind"] == "decoding" and meta["tree"]["steps"] == [0, 5]  # the rendered decode steps
    root = result.tree / "inference_timestep_0"
    cells = sorted(str(p.relative_to(root)) for p in root.glob("decode_step_*/layer_*"))
    assert cells == ["decode_step_0/layer_0", "decode_step_0/layer_3", "decode_step_5/layer_0",
                     "decode_step_5/layer_3"]
    want = {f"fused_attention_on_{n}.jpg" for n in
            ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb", "text", "generated")}
    for cell in cells:
        files = {p.name for p in (root / cell).iterdir()}
        assert files == want
        for name in files:
            assert simplejpeg.decode_jpeg((root / cell / name).read_bytes()).shape[-1] == 3
    bundle = load_decode_bundle(result.bundles[0])
    assert bundle.inference_step == 0 and bundle.attention.dtype == np.float16
    assert bundle.attention.shape[0] == bundle.num_generated and bundle.attention_heads == "max"
    maps = decode_maps(bundle)
    assert len(maps.drawn.cameras) == 3  # openpi's FAST inputs mask no camera
    pads = ~bundle.token_mask[0]
    rows = bundle.unaligned(bundle.attention[:, :, 0, 0, 0, 0].astype(np.float32))
    start = len(bundle.camera_names) * bundle.patches_per_camera
    assert (rows[..., start:start + bundle.token_ids.shape[1]][..., pads] == 0).all()  # padding never attended
    assert (rows <= 1.0).all() and (rows.sum(-1) >= 1.0 - 2e-2).all()  # max over heads of probability rows

    refused = CliRunner().invoke(demo_command, ["--model", "pi0-fast", "--action-tokens", "0",
                                                "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--action-tokens" in refused.output
