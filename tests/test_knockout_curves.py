"""Deletion and insertion curves (pi0viz.causal.curves, `pi0viz knockout`, the report's knockout section): patches
removed in a map's order against random order; on reach-tiny's shipped held-out scenes the action tokens' map at
step 7, layer 2 removes what moves the chunk sooner than chance and than its own reverse order."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from pi0viz.causal.curves import _order_keys, map_scores, paired_gap, parse_reduction, rank_maps
from pi0viz.cli import main

# The first 24 examples (8 scenes) of the shipped held-out scenes, ~35 s on 2 cores. Measured on them (chunk end
# moves, cm; areas over the removed fraction 0..1; mean +- standard error over examples): the map's deletion gap
# 7.7 +- 1.7 (random order's deletion area 9.5 +- 0.9), the reversed map's -0.3 +- 1.0, paired difference
# 8.0 +- 1.5.
CURVE_EXAMPLES = 24
MAP = "step 7, layer 2, mean"


def test_reductions_and_orders() -> None:
    cfg = SimpleNamespace(image_keys=("a", "b"), num_image_tokens=4, prefix_len=10)
    assert parse_reduction("mean") == "mean" and parse_reduction("head:3") == 3
    for bad in ("median", "head:", "head:-1", "head:x"):
        with pytest.raises(ValueError, match="expected mean, max or head:N"):
            parse_reduction(bad)
    rng = np.random.default_rng(0)
    att = rng.uniform(size=(2, 3, 1, 2, 4, 5, 10)).astype(np.float32)  # [D, L, B, K, G, Q, S]: 8 heads
    per_head = [map_scores(att, cfg, "b", 1, 2, f"head:{h}") for h in range(8)]
    np.testing.assert_allclose(np.mean(per_head, axis=0), map_scores(att, cfg, "b", 1, 2, "mean"), rtol=1e-6)
    np.testing.assert_allclose(per_head[5][0], att[1, 2, 0, 1, 1].mean(axis=0)[4:8], rtol=1e-6)
    with pytest.raises(ValueError, match="8 query heads"):
        map_scores(att, cfg, "b", 1, 2, "head:8")
    order = np.array([2, 0, 3, 1])
    deleted = _order_keys(cfg, "b", order, 1, insertion=False)
    inserted = _order_keys(cfg, "b", order, 1, insertion=True)
    assert np.flatnonzero(deleted).tolist() == [6] and np.flatnonzero(inserted).tolist() == [4, 5, 7]
    result = {"maps": {"x": {"deletion_gap": {"mean": 1.0}, "deletion_gaps": [1.0, 3.0]},
                       "y": {"deletion_gap": {"mean": 2.0}, "deletion_gaps": [0.0, 0.0]}}}
    assert rank_maps(result) == ["y", "x"] and paired_gap(result, "x", "y") == {"mean": 2.0, "se": 1.0}


@pytest.fixture(scope="module")
def curves():
    from pi0viz.causal.curves import reach_faithfulness
    from pi0viz.policy.reach_model import heldout_scenes

    scenes = heldout_scenes()
    return reach_faithfulness(scenes=scenes, examples=scenes.examples[:CURVE_EXAMPLES],
                              extra_maps=lambda maps: {"reversed": -maps[MAP]})


def test_the_action_map_is_more_faithful_than_random_and_its_reverse(curves) -> None:
    assert curves["format"] == "pi0viz.knockout/1" and curves["examples"] == CURVE_EXAMPLES
    assert curves["fractions"] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    m, rev = curves["maps"][MAP], curves["maps"]["reversed"]
    # the shared ends: nothing removed moves nothing; the whole camera removed is the same row for every order
    assert m["deletion"][0]["mean"] == 0.0 and m["insertion"][-1]["mean"] == 0.0
    assert m["deletion"][-1] == rev["deletion"][-1] == curves["random"]["deletion"][-1]
    assert curves["random"]["deletion"][-1]["mean"] > 10  # the camera gone: the chunk goes astray
    gap = m["deletion_gap"]  # measured 7.7 +- 1.7 cm
    assert gap["mean"] > 3 and gap["mean"] > 3 * gap["se"], gap
    # the top 5 % of the map moves the chunk more than 5 % random patches
    assert m["deletion"][1]["mean"] > 2 * curves["random"]["deletion"][1]["mean"]
    vs = paired_gap(curves, MAP, "reversed")  # measured 8.0 +- 1.5
    assert vs["mean"] > 3 and vs["mean"] > 3 * vs["se"], vs
    assert rank_maps(curves) == [MAP, "reversed"] and curves["ranking"] == [MAP, "reversed"]
    # insertion separates the map from its reverse too (restoring the bottom first brings the chunk back last)
    assert m["insertion_gap"]["mean"] - rev["insertion_gap"]["mean"] > 3


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_knockout_command_writes_json_csv_png_and_the_report_shows_the_table(tmp_path) -> None:
    out = tmp_path / "run" / "ko"
    code, output = _run(["knockout", "--out", str(out), "--examples", "2", "--layers", "1-2",
                         "--reductions", "mean,head:1", "--fractions", "0,50,100", "--draws", "1"])
    assert code == 0, output
    data = json.loads((out / "knockout.json").read_text())
    assert data["format"] == "pi0viz.knockout/1" and data["examples"] == 2 and data["fractions"] == [0, 0.5, 1]
    assert set(data["maps"]) == {f"step 7, layer {l}, {r}" for l in (1, 2) for r in ("mean", "head:1")}
    lines = (out / "knockout.csv").read_text().splitlines()
    assert lines[0].startswith("map,rank,curve,fraction,mean,se,deletion_gap")
    assert len(lines) == 1 + 5 * 2 * 3  # 4 maps and random, 2 curves, 3 fractions
    assert (out / "knockout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "most faithful first" in output and f"knockout: {out}" in output
    # the report of the folder above: a knockout section with the ranked table and the plot
    code, output = _run(["report", str(tmp_path / "run")])
    assert code == 0, output
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Knockouts: deletion and insertion curves" in page and "deletion gap (faithfulness)" in page
    for name in data["maps"]:
        assert f'<td class="l">{name}</td>' in page
    assert "random order" in page and "data:image/png;base64," in page


def test_report_escapes_knockout_text_and_names_a_bad_file(tmp_path) -> None:
    good, bad = tmp_path / "a", tmp_path / "b"
    good.mkdir()
    bad.mkdir()
    entry = {"deletion_gap": {"mean": 1.5, "se": 0.5}, "insertion_gap": {"mean": 0.1, "se": 0.2}}
    (good / "knockout.json").write_text(json.dumps({
        "format": "pi0viz.knockout/1", "policy": "<b>x</b>", "examples": 3,
        "maps": {"<script>alert(1)</script>": entry, "nan map": {"deletion_gap": {"mean": "1", "se": 0}}},
        "random": {}}))
    (bad / "knockout.json").write_text("{not json")
    code, output = _run(["report", str(tmp_path)])
    assert code == 0, output
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<b>x" not in page
    assert "1.500 ± 0.500" in page and "nan map" not in page
    assert "not a readable pi0viz.knockout/1 file" in page


@pytest.mark.parametrize("args, expect", [
    (["--policy", "ws://localhost:1"], "pi0viz knockout cannot run policy 'ws://localhost:1'; it takes tiny, "
                                     "reach-tiny, checkpoint:DIR"),
    (["--fractions", "0,150"], "--fractions '0,150': expected percentages 0..100"),
    (["--reductions", "mean,median"], "--reductions: head reduction 'median'"),
    (["--reductions", "head:2"], "reach-tiny has 2 query heads"),
    (["--examples", "64"], "--examples 64: the held-out scenes have 63"),
    (["--layers", "7"], "--layers: [7] not in reach-tiny's 4 layers"),
    (["--steps", "3-1"], "--steps: range '3-1' runs backwards"),
    (["--draws", "0"], "0 is not in 1..100"),
])
def test_bad_knockout_flags_are_one_line(tmp_path, args, expect) -> None:
    code, output = _run(["knockout", "--out", str(tmp_path / "ko"), *args])
    assert code == 1 and expect in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "ko").exists()


def test_report_of_a_run_with_episodes_has_the_knockout_section_too(tmp_path) -> None:
    from pi0viz.core.bundle import save_bundle
    from pi0viz.core.synthetic import synthetic_bundle

    bundles = tmp_path / "ep0" / "bundles"
    bundles.mkdir(parents=True)
    for n in range(2):
        b = synthetic_bundle(num_steps=2, num_layers=2, num_action_tokens=3)
        b.inference_step = n
        save_bundle(b, bundles / f"inference_{n:03d}.npz")
    assert _run(["metrics", str(tmp_path)])[0] == 0
    entry = {"deletion_gap": {"mean": 2.25, "se": 0.5}, "insertion_gap": {"mean": 0.1, "se": 0.2}}
    (tmp_path / "ko").mkdir()
    (tmp_path / "ko" / "knockout.json").write_text(json.dumps({
        "format": "pi0viz.knockout/1", "maps": {"step 7, layer 2, mean": entry}, "random": {}}))
    code, output = _run(["report", str(tmp_path)])
    assert code == 0, output
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Sinks</h2>" in page and "<h2>Episodes</h2>" in page and "Knockouts:" in page
    assert page.index("Knockouts:") < page.index("<h2>Episodes</h2>") and "2.250 ± 0.500" in page
