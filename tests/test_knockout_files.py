"""core.knockout_files and core.jsonfile: the one guarded JSON reader and the one presentation of knockout results.
`pi0viz report` (HTML) and the viewer's knockouts panel (page JSON) must show the same cells for the same file, and
refuse the same damaged files (NaN, too large, another format)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from pi0viz.analysis.report import write_report
from pi0viz.core.jsonfile import read_json
from pi0viz.core.knockout_files import CURVES_HEADER, STUDY_HEADER, read_knockout_result
from pi0viz.errors import JsonFileError
from pi0viz.viewer.knockouts import knockout_panel

STUDY = {"format": "pi0viz.knockout.conditions/1", "policy": "tiny", "prompt": "<b>pick</b> up", "noise_draws": 2,
         "conditions": [
             {"set": "camera base_0_rgb", "method": "keys", "route": "expert", "layer": 1, "k": 256,
              "mean_abs_delta": {"mean": 0.123456, "se": 0.0042}, "random": {"mean": 0.01, "se": 0.001}, "ratio": 12.3},
             {"set": "top 8", "method": "pixels", "route": "all", "layer": None, "k": 8,
              "mean_abs_delta": {"mean": 0.02, "se": 0.003}, "random": None, "ratio": None},
             {"set": "no shift", "mean_abs_delta": None}]}
CURVES = {"format": "pi0viz.knockout/1", "examples": 4, "maps": {
    "low": {"deletion_gap": {"mean": 0.5, "se": 0.1}},
    "high": {"deletion_gap": {"mean": 2.0, "se": 0.25}, "insertion_gap": {"mean": 0.75, "se": 0.125},
             "deletion_area": {"mean": 3.0, "se": 0.5}, "insertion_area": {"mean": 4.0, "se": 0.5}}},
    "random": {"deletion_area": {"mean": 5.0, "se": 0.5}, "insertion_area": {"mean": 1.0, "se": 0.25}}}


def _report_tables(page: str) -> list[list[list[str]]]:
    """Every <table> of a report page as rows of unescaped cell texts (header row first)."""
    return [[[html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
             for row in re.findall(r"<tr>(.*?)</tr>", table)]
            for table in re.findall(r"<table>(.*?)</table>", page)]


def test_report_and_viewer_show_the_same_cells(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "knockouts.json").write_text(json.dumps(STUDY))
    Image.new("RGB", (12, 8), (9, 99, 9)).save(tmp_path / "study" / "knockouts.png")
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / "knockout.json").write_text(json.dumps(CURVES))
    study = read_knockout_result(tmp_path / "study" / "knockouts.json", tmp_path)
    assert study.kind == "conditions" and study.title == "study/knockouts.json" and study.header == STUDY_HEADER
    assert study.rows == [
        ["camera base_0_rgb", "keys", "expert, layer 1", "256", "0.1235 ± 0.0042", "0.0100 ± 0.0010", "12.3×"],
        ["top 8", "pixels", "pixel replacement", "8", "0.0200 ± 0.0030", "–", "–"]]
    assert study.info == ["policy: tiny", "prompt: <b>pick</b> up", "noise_draws: 2"]
    assert study.figure == tmp_path / "study" / "knockouts.png"
    curves = read_knockout_result(tmp_path / "curves" / "knockout.json", tmp_path)
    assert curves.header == CURVES_HEADER and curves.rows == [
        ["1", "high", "2.000 ± 0.250", "0.750 ± 0.125", "3.000 ± 0.500", "4.000 ± 0.500"],
        ["2", "low", "0.500 ± 0.100", "–", "–", "–"],
        ["", "random order", "", "", "5.000 ± 0.500", "1.000 ± 0.250"]]

    page = write_report(tmp_path).read_text()
    assert "<b>pick" not in page and "&lt;b&gt;pick&lt;/b&gt; up" in page
    tables = _report_tables(page)
    for t in (study, curves):
        panel = knockout_panel(tmp_path / t.title, tmp_path)
        assert [panel["header"], *panel["rows"]] == [t.header, *t.rows] and [t.header, *t.rows] in tables
    assert knockout_panel(tmp_path / "study" / "knockouts.json", tmp_path)["figure"].startswith("data:image/png;")
    assert page.count("data:image/png;base64,") == 1  # the study's figure; the curves have none


@pytest.mark.parametrize("text", ['{"format": "pi0viz.knockout/1", "maps": {"a": {"deletion_gap": NaN}}}',
                                  '{"format": "pi0viz.knockout/1", "maps": {}, "x": Infinity}',
                                  '{"format": "pi0viz.knockout.conditions/1", "maps": {}}', "[1, 2]", "{not json"])
def test_a_damaged_file_is_one_line_in_both(tmp_path: Path, text: str) -> None:
    (tmp_path / "ko").mkdir()
    (tmp_path / "ko" / "knockout.json").write_text(text)
    line = "knockout.json: not a readable pi0viz.knockout/1 file"
    assert knockout_panel(tmp_path / "ko" / "knockout.json", tmp_path)["info"] == [line]
    page = write_report(tmp_path).read_text()
    assert f'<p class="muted">{line}</p>' in page and "<table>" not in page


def test_read_json_refuses_in_one_line(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text('{"format": "a/1", "v": [1.5, null]}')
    assert read_json(f, max_bytes=100, fmt="a/1") == {"format": "a/1", "v": [1.5, None]}
    for text, max_bytes, fmt, reason in [
            ('{"v": NaN}', 100, None, "not readable JSON (NaN is not a number JSON allows"),
            ('{"v": -Infinity}', 100, None, "not readable JSON (-Infinity is not a number JSON allows"),
            ('{"format": "b/1"}', 100, "a/1", "not a a/1 file (format 'b/1')"),
            ("[]", 100, "a/1", "not a a/1 file (a JSON list)"),
            ("[" * 100_000 + "]" * 100_000, 1 << 20, None, "not readable JSON ("),
            ('{"v": "' + "x" * 2000 + '"}', 1000, None, "larger than 1000 bytes"),
            (b"\xff\xfe{}", 100, None, "not readable JSON (")]:
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(JsonFileError) as err:
            read_json(f, max_bytes=max_bytes, fmt=fmt)
        assert err.value.reason.startswith(reason) and str(err.value) == f"{f}: {err.value.reason}"
        assert "\n" not in str(err.value)
    f.write_text('{"v": NaN}')
    assert read_json(f, max_bytes=100, allow_nan=True)["v"] != 0  # NaN kept where the writer may emit it
    with pytest.raises(JsonFileError, match="not readable JSON"):
        read_json(tmp_path / "missing.json", max_bytes=100)
