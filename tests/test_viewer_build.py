"""Building the viewer page without a browser: data encoding, safe embedding, inputs, errors, the CLI."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from bundle_support import small
from click.testing import CliRunner

from pi0viz import save_bundle
from pi0viz.cli import main
from pi0viz.core import fusion
from pi0viz.core.bundle import BundleError
from pi0viz.core.synthetic import place_hot_key
from pi0viz.viewer import ViewerError, write_viewer
from pi0viz.viewer.data import call_arrays, decode_fused
from pi0viz.viewer.page import json_for_script


def page_meta(path):
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', text, re.S)
    return json.loads(m.group(1)), text


def test_encoding_matches_fusion_within_quantization_error():
    b = small(num_layers=4, num_action_tokens=7, image_masks=(True, False, True))
    place_hot_key(b, step=1, layer=2, action_token=3, head=5, key=300 - 256 + 512, mass=0.7)  # camera 2
    call = call_arrays(b)
    ref = fusion.fuse_call(b.attention, b.layout, b.image_masks, b.token_mask, keep_heads=True)
    assert call.drawn_regions == [(n, s, e) for n, s, e in ref.regions]
    np.testing.assert_array_equal(call.drawn_keys, ref.keys)
    got = decode_fused(call)
    top = ref.fused.max(-1, keepdims=True)
    np.testing.assert_array_equal(got.max(-1), ref.fused.max(-1))  # the cell maximum is exact
    assert np.abs(got - ref.fused).max() <= (top * 2 / 255).max()  # sqrt quantization: < 1 level of sqrt
    assert np.all(np.abs(got - ref.fused) <= 2 * np.sqrt(ref.fused * top) / 255 + 1e-9)
    heads = np.stack(call.heads).astype(np.float32) / 255  # [D, L, A, H, R]
    heads = heads * heads * call.cell_max[..., None, None]
    np.testing.assert_allclose(heads, ref.heads, atol=float(top.max()) * 2 / 255)
    np.testing.assert_array_equal(np.stack(call.heads).max(3), call.fused)  # fused = max of the stored heads
    mass = call.mass.astype(np.float64) / 65535  # [D, L, A, H + 1, M]
    np.testing.assert_allclose(mass[..., -1, [0, 2, 3]], ref.region_mass, atol=1e-4)
    np.testing.assert_allclose(mass.sum(-1), 1.0, atol=1e-3)
    assert (mass[..., 1] == 0).all()  # the masked camera gets nothing


def test_logits_give_the_same_page_data_as_probs():
    b = small()
    logits = np.log(np.maximum(b.attention, 1e-30)) + 3.0  # any per-row shift gives the same softmax
    lb = small()
    lb.attention, lb.attention_kind = logits.astype(np.float32), "logits"
    p, q = call_arrays(b), call_arrays(lb)
    assert np.abs(p.fused.astype(int) - q.fused.astype(int)).max() <= 1
    np.testing.assert_allclose(p.cell_max, q.cell_max, rtol=1e-4)


def test_probs_that_are_really_logits_are_refused():
    b = small()
    b.attention = b.attention * 5
    with pytest.raises(fusion.FusionError, match="logits"):
        call_arrays(b)


def test_pi05_shape_and_reduced_bundle_build(tmp_path):
    b = small(num_text_tokens=200, num_state_tokens=0, num_action_tokens=10)
    meta, _ = page_meta(write_viewer([b], tmp_path / "pi05.html", heads="embed"))
    assert meta["dims"] == {"D": 2, "L": 3, "A": 10, "H": 8}
    assert [n for n, _ in meta["massRegions"]] == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb", "prompt",
                                                   "actions"]
    fused = small()
    fused.attention = fused.attention.max(axis=4, keepdims=True)  # heads fused on device: K = G = 1
    fused.attention_heads = "max"
    meta, _ = page_meta(write_viewer([fused], tmp_path / "max.html"))
    assert meta["calls"][0]["heads"] is False and not any(k.startswith("h") for k in meta["chunks"])


def test_json_and_text_from_data_cannot_break_out_of_the_page(tmp_path):
    assert "<" not in json_for_script({"a": "</script><!--", "b": "\u2028"})
    assert json.loads(json_for_script({"a": "</script>&"})) == {"a": "</script>&"}
    b = small()
    b.prompt = np.asarray(['</script><script>alert(1)</script>'])
    out = write_viewer([b], tmp_path / "x.html", title="</title><script>alert(2)</script>")
    meta, text = page_meta(out)
    assert meta["calls"][0]["prompt"] == '</script><script>alert(1)</script>'
    assert "alert(1)" in text and "<script>alert(1)" not in text and "<script>alert(2)" not in text
    assert text.count("<script") == text.count("</script>")


def test_side_and_embedded_data_hold_the_same_bytes(tmp_path):
    b = small()
    side = write_viewer([b], tmp_path / "side.html", heads="side", fused="side")
    emb = write_viewer([b], tmp_path / "emb.html", heads="embed", fused="embed")
    meta_s, _ = page_meta(side)
    _, text_e = page_meta(emb)
    assert sorted(p.name for p in (tmp_path / "side_data").iterdir()) == sorted(
        f"{k}.js" for k, spec in meta_s["chunks"].items() if "file" in spec)
    for cid, spec in meta_s["chunks"].items():
        if "file" not in spec:
            continue
        js = (tmp_path / spec["file"]).read_text()
        b64 = re.fullmatch(r'pi0vizChunk\("(\w+)","([A-Za-z0-9+/=]*)"\);\n', js)
        inline = re.search(rf'id="pi0viz-chunk-{cid}">([A-Za-z0-9+/=]*)</script>', text_e)
        assert b64 and b64.group(1) == cid and inline and b64.group(2) == inline.group(1)
        itemsize = {"u8": 1, "u16": 2, "f32": 4}[spec["dtype"]]
        assert len(base64.b64decode(b64.group(2))) == np.prod(spec["shape"]) * itemsize
    assert not (tmp_path / "emb_data").exists()


def test_calls_are_ordered_and_must_agree(tmp_path):
    calls = []
    for step in (7, 3):
        b = small(seed=step)
        b.inference_step = step
        calls.append(b)
    meta, _ = page_meta(write_viewer(calls, tmp_path / "ep.html"))
    assert [c["step"] for c in meta["calls"]] == [3, 7]
    twin = small()
    twin.inference_step = 3
    with pytest.raises(ViewerError, match="same inference_step"):
        write_viewer([calls[1], twin], tmp_path / "dup.html")
    other = small(num_layers=4)
    other.inference_step = 9
    with pytest.raises(BundleError, match="one policy and episode"):
        write_viewer([calls[0], other], tmp_path / "mixed.html")
    with pytest.raises(ViewerError, match="nothing to view"):
        write_viewer([], tmp_path / "none.html")
    with pytest.raises(ViewerError, match="attention_viz layout"):
        write_viewer([], tmp_path / "t.html", tree=tmp_path)


def test_cli_writes_a_page_for_bundles_and_a_folder(tmp_path):
    for step in (0, 1):
        b = small(seed=step)
        b.inference_step = step
        save_bundle(b, tmp_path / "ep" / f"call_{step}.npz")
    out = tmp_path / "view.html"
    res = CliRunner().invoke(main, ["view", str(tmp_path / "ep"), "--out", str(out), "--heads", "none"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.is_file()
    meta, _ = page_meta(out)
    assert [c["source"] for c in meta["calls"]] == ["call_0.npz", "call_1.npz"]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    res = CliRunner().invoke(main, ["view", str(tmp_path / "bad.npz"), "--out", str(out)])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output
