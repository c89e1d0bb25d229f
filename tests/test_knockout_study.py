"""`pi0viz knockout` on one observation (pi0viz.causal.study): key sets of every kind (camera, mask file, top /
bottom of a map, prompt tokens by slot and by text, reach-tiny's named object), routes and layers, pixel
replacement next to key masking, matched random baselines, observations from a saved bundle, JSON / CSV / PNG."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from pi0viz.causal.study import Place, paint_patches, parse_places
from pi0viz.cli import main


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_places_and_painted_patches() -> None:
    assert parse_places("all,expert@2,image", 4) == [Place("all"), Place("expert", 2), Place("image")]
    assert parse_places("prefix", 3, per_layer=True) == [Place("prefix")] + [Place("prefix", l) for l in range(3)]
    for bad, msg in (("some", "expected routes"), ("all@x", "expected routes"), ("all@4", "has 4 layers")):
        with pytest.raises(ValueError, match=msg):
            parse_places(bad, 4)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (224, 224, 3)).astype(np.float32)
    patches = np.zeros(256, bool)
    patches[[0, 17]] = True  # (row 0, col 0) and (row 1, col 1): 14 x 14 px each
    out = paint_patches(image, patches, (16, 16))
    mean = image.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(out[:14, :14], np.broadcast_to(mean, (14, 14, 3)), rtol=1e-6)
    np.testing.assert_allclose(out[14:28, 14:28], np.broadcast_to(mean, (14, 14, 3)), rtol=1e-6)
    changed = np.any(out != image, axis=-1)
    assert changed.sum() <= 2 * 14 * 14 and not changed[:14, 14:28].any() and not changed[28:].any()


@pytest.fixture(scope="module")
def reach_run(tmp_path_factory):
    """One CLI run on reach-tiny's shipped scene: every kind of set, key masking and pixels, two routes."""
    out = tmp_path_factory.mktemp("ko") / "study"
    code, output = _run(["knockout", "--policy", "reach-tiny", "--remove", "object", "--remove", "top:11",
                         "--remove", "bottom:11", "--remove", "text:soup", "--remove", "prompt:0",
                         "--map-step", "7", "--map-layer", "2", "--where", "all,expert,image", "--draws", "3",
                         "--noise-draws", "2", "--out", str(out)])
    assert code == 0, output
    return out, json.loads((out / "knockouts.json").read_text()), output


def test_reach_tiny_key_sets_against_their_random_baselines(reach_run) -> None:
    out, data, output = reach_run
    assert data["format"] == "pi0viz.knockout.conditions/1" and data["policy"] == "reach-tiny"
    assert data["prompt"] == "reach the alphabet soup" and data["map"] == {"step": 7, "layer": 2, "heads": "mean",
                                                                         "rows": "action tokens"}
    cond = {(c["set"], c["method"], c["route"]): c for c in data["conditions"]}
    named = cond[("named object", "keys", "all")]
    top = cond[("top-11 of step 7, layer 2, mean", "keys", "all")]
    bottom = cond[("bottom-11 of step 7, layer 2, mean", "keys", "all")]
    # measured on this scene: named 0.051, top-11 0.117, bottom-11 0.001; random ~0.001 (mean |delta action|)
    assert named["k"] == 5 and top["k"] == bottom["k"] == 11
    for c in (named, top):
        assert c["mean_abs_delta"]["mean"] > 20 * c["random"]["mean"] and c["ratio"] > 20, c
    assert bottom["mean_abs_delta"]["mean"] < 5 * bottom["random"]["mean"]
    # pixel replacement agrees in order with key masking (measured: named 0.068, top 0.115, bottom 0.001)
    pix = {name: cond[(name, "pixels", "all")]["mean_abs_delta"]["mean"] for name in
           ("named object", "top-11 of step 7, layer 2, mean", "bottom-11 of step 7, layer 2, mean")}
    assert pix["named object"] > 10 * pix["bottom-11 of step 7, layer 2, mean"]
    assert pix["top-11 of step 7, layer 2, mean"] > 10 * pix["bottom-11 of step 7, layer 2, mean"]
    # prompt sets have no random baseline and no pixels; removing the object's word moves the chunk
    soup = cond[("prompt 'soup'", "keys", "all")]
    assert soup["random"] is None and ("prompt 'soup'", "pixels", "all") not in cond and soup["k"] == 1
    assert soup["mean_abs_delta"]["mean"] > 0.05 and cond[("prompt slots 0", "keys", "expert")]["k"] == 1
    # the image tokens that cannot read "soup" lose the target too
    assert cond[("prompt 'soup'", "keys", "image")]["mean_abs_delta"]["mean"] > 0.05
    rows = list(csv.reader(io.StringIO((out / "knockouts.csv").read_text())))
    assert rows[0][:7] == ["set", "method", "route", "layer", "camera", "k", "mean_abs_delta"]
    assert len(rows) == 1 + len(data["conditions"])
    assert (out / "knockouts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "named object | all:" in output and "x" in output


def test_a_saved_bundle_and_a_mask_file_as_the_observation(tmp_path) -> None:
    """The bundle's images and prompt plus the state of NAME.observation.npz give the same observation as the
    request itself; a plain [16, 16] mask file removes its patches; --prefix-attention writes the side file next
    to the bundle."""
    from pi0viz.causal.observation import (bundle_observation, load_observation, observation_path,
                                           save_observation, shipped_observation)
    from pi0viz.core.bundle import save_bundle
    from pi0viz.core.capture_options import CaptureOptions
    from pi0viz.policy.reach_model import load_reach_policy

    request, _, named = shipped_observation("reach-tiny")
    policy = load_reach_policy()
    bundle = policy.infer(request, capture=CaptureOptions(action_rows_only=True, prefix_keys_only=True,
                                                          fuse_heads=True, dtype="float16"))["attention_bundle"]
    path = save_bundle(bundle, tmp_path / "ep0" / "bundles" / "inference_000.npz")
    code, output = _run(["knockout", "--policy", "reach-tiny", "--bundle", str(path), "--out", str(tmp_path / "x")])
    assert code == 1 and "does not hold the robot state" in output and len(output.strip().splitlines()) == 1
    save_observation(request, observation_path(path))
    again = load_observation(observation_path(path))
    assert again["prompt"] == request["prompt"] and np.array_equal(again["observation/image"], request["observation/image"])
    rebuilt = bundle_observation(path)
    a, b = policy.prepare(request), policy.prepare(rebuilt)
    for cam in policy.config.image_keys:
        np.testing.assert_array_equal(a.images[cam], b.images[cam])
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)

    from pi0viz.analysis.masks import CallMasks, save_masks

    np.savez(tmp_path / "mask.npz", mask=named)
    save_masks(CallMasks(["base_0_rgb"], ["soup", "bowl"], np.stack([named, ~named])[:, None].astype(np.float32),
                         np.array([True])), path.with_name("inference_000.masks.npz"))
    out = tmp_path / "ep0" / "knockout"
    code, output = _run(["knockout", "--policy", "reach-tiny", "--bundle", str(path), "--remove",
                         f"mask:{tmp_path / 'mask.npz'}", "--remove", f"mask:{path.with_name('inference_000.masks.npz')}#soup",
                         "--where", "all", "--method", "keys",
                         "--draws", "2", "--noise-draws", "2", "--prefix-attention", "--out", str(out)])
    assert code == 0, output
    data = json.loads((out / "knockouts.json").read_text())
    by = {c["set"]: c["mean_abs_delta"] for c in data["conditions"]}
    assert by["mask mask.npz"] == by["mask inference_000.masks.npz#soup"]  # the same patches, the same rows
    assert by["mask mask.npz"]["mean"] > 0.02
    assert path.with_name("inference_000.prefix.npz").is_file() and data["prefix_attention"]["images"] > 0
    assert (out / "prefix_attention" / "inference_timestep_0" / "layer_1" / "image_region").is_dir()
    # the episode's report: its metrics and the knockout section with the key sets' table
    assert _run(["metrics", str(tmp_path)])[0] == 0
    code, output = _run(["report", str(tmp_path)])
    assert code == 0, output
    page = (tmp_path / "report.html").read_text()
    assert "Knockouts: deletion and insertion curves, key sets" in page and "<h2>Episodes</h2>" in page
    assert '<td class="l">mask inference_000.masks.npz#soup</td>' in page and "pixel replacement" not in page
    assert "random, same k" in page and "prefix attention tree" in page and "data:image/png;base64," in page


@pytest.mark.parametrize("args, expect", [
    (["--remove", "nose:3"], "--remove 'nose:3': expected one of camera:NAME"),
    (["--remove", "top:0"], "--remove top:0: expected top:K, K in 1..256"),
    (["--remove", "camera:left_wrist_0_rgb"], "the model's cameras are base_0_rgb"),
    (["--remove", "text:zebra"], "no prompt token contains 'zebra'"),
    (["--remove", "prompt:40"], "--remove prompt:40: expected prompt slots among"),
    (["--remove", "top:3", "--map-layer", "9"], "--map-layer 9: the model has 4 layers"),
    (["--remove", "top:3", "--map-heads", "median"], "--map-heads: head reduction 'median'"),
    (["--remove", "top:3", "--where", "everywhere"], "--where 'everywhere': expected routes"),
    (["--remove", "top:3", "--method", "paint"], "--method 'paint': expected keys, pixels"),
    (["--state", "1,2"], "--state goes with --bundle"),
    (["--policy", "lerobot:/nowhere"], "pi0viz knockout cannot run policy 'lerobot:/nowhere'"),
])
def test_bad_study_flags_are_one_line(tmp_path, args, expect) -> None:
    code, output = _run(["knockout", "--out", str(tmp_path / "ko"), *args])
    assert code == 1 and expect in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "ko").exists()


def test_a_reach_tiny_training_run_is_a_policy_like_the_shipped_one(tmp_path) -> None:
    """checkpoint:DIR of a reach-tiny run (the closed-loop training_runs/reach_tiny_loop) loads as a reach-tiny
    model in every command (load_policy): knockout takes reach-tiny's held-out scene and its named object."""
    from pathlib import Path

    from pi0viz.policy.spec import PolicySpecError, load_policy

    loop = Path(__file__).resolve().parents[1] / "training_runs" / "reach_tiny_loop"
    policy = load_policy(f"checkpoint:{loop}")
    assert policy.config.action_horizon == 10 and policy.description.startswith("reach-tiny")
    with pytest.raises(PolicySpecError, match="names its own config in model.json; --config pi05_libero"):
        load_policy(f"checkpoint:{loop}", config="pi05_libero")
    code, output = _run(["knockout", "--policy", f"checkpoint:{loop}", "--remove", "object", "--where", "all",
                         "--draws", "2", "--noise-draws", "1", "--out", str(tmp_path / "ko")])
    assert code == 0, output
    data = json.loads((tmp_path / "ko" / "knockouts.json").read_text())
    assert data["prompt"] == "reach the alphabet soup"
    named = [c for c in data["conditions"] if c["set"] == "named object"]
    assert named and named[0]["mean_abs_delta"]["mean"] > 5 * named[0]["random"]["mean"]
