"""pi0viz.core.selection: the one selection grammar (steps, layers, action tokens, tasks) of every command."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pi0viz.core.selection import format_spans, parse_intervals, parse_selection
from pi0viz.errors import Pi0vizError, SelectionError


def test_lists_and_inclusive_ranges_in_the_order_of_what_exists() -> None:
    assert parse_selection("0,3-5,9", range(10), "steps") == [0, 3, 4, 5, 9]
    assert parse_selection("9,0", range(10), "steps") == [0, 9]  # the order of `available`, not of the spec
    assert parse_selection([17, 2], [2, 10, 17], "layers") == [2, 17]
    assert parse_selection(np.array([1, 3]), np.arange(5, dtype=np.int32), "steps") == [1, 3]


def test_all_and_none_select_everything() -> None:
    assert parse_selection(None, [2, 4], "layers") == [2, 4]
    assert parse_selection("all", [2, 4], "layers") == [2, 4] == parse_selection("  ALL ", [2, 4], "layers")
    assert parse_intervals(None, "x") is None and parse_intervals("all", "x") is None


def test_a_range_takes_what_exists_inside_it() -> None:
    # render and sweep used to disagree here: one clipped, the other refused
    assert parse_selection("0-17", [2, 10, 17], "layers") == [2, 10, 17]
    assert parse_selection("5-100", range(10), "steps") == [5, 6, 7, 8, 9]
    assert parse_selection("3-3", range(10), "steps") == [3]


def test_a_single_value_that_does_not_exist_is_refused_naming_what_exists() -> None:
    with pytest.raises(SelectionError, match=r"^layers: \[5\] not in this capture, which has 2,10,17$"):
        parse_selection("5", [2, 10, 17], "layers")
    with pytest.raises(SelectionError, match=r"^--tasks: \[12\] not in libero_spatial, which has 0-9$"):
        parse_selection("0,12", range(10), "--tasks", within="libero_spatial")
    with pytest.raises(SelectionError, match=r"\[7\] not in this capture"):
        parse_selection([0, 7], range(3), "steps")


def test_a_range_that_holds_nothing_and_an_empty_selection_are_refused() -> None:
    with pytest.raises(SelectionError, match=r"^steps: range '20-30' holds none of this capture's 0-9$"):
        parse_selection("0,20-30", range(10), "steps")
    with pytest.raises(SelectionError, match="nothing to select"):
        parse_selection(None, [], "layers")
    with pytest.raises(SelectionError, match="holds none"):
        parse_selection("0-5", [], "layers")
    for empty in ("", "   ", []):
        with pytest.raises(SelectionError, match="empty"):
            parse_selection(empty, range(10), "steps")


def test_a_huge_range_answers_at_once_and_is_never_expanded() -> None:
    start = time.perf_counter()
    assert parse_selection("0-100000000000", range(10), "steps") == list(range(10))
    assert parse_selection("3-100000000000,0", [0, 5, 10**11], "steps") == [0, 5, 10**11]
    with pytest.raises(SelectionError, match="holds none"):
        parse_selection("100000000000-200000000000", range(2), "steps")
    parsed = parse_intervals("0-100000000000000000", "steps")
    assert parsed is not None and parsed.count_within(0, 18) == 18 and 10**17 in parsed and 10**17 + 1 not in parsed
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("spec, why", [
    ("x", "cannot read 'x'"),
    ("1,,2", "cannot read ''"),
    ("1,", "cannot read ''"),
    ("1-", "cannot read '1-'"),
    ("1.5", "cannot read '1.5'"),
    ("0x3", "cannot read '0x3'"),
    ("5-3", "runs backwards"),
    ("-1", "cannot read '-1' (indices start at 0"),
    ("2,-3", "cannot read '-3'"),
    ("1" * 1001, "expected at most 1000 digits"),
])
def test_bad_syntax_is_one_line_naming_the_grammar(spec: str, why: str) -> None:
    with pytest.raises(SelectionError) as err:
        parse_selection(spec, range(10), "--steps")
    message = str(err.value)
    assert message.startswith("--steps: ") and why in message and "\n" not in message
    assert isinstance(err.value, Pi0vizError)  # the pi0viz command prints it as one line, exit 1
    with pytest.raises(SelectionError):  # the syntax alone is refused before anything is known
        parse_intervals(spec, "--steps")


@pytest.mark.parametrize("spec", [[-1], [True], [1.0], ["1"]])
def test_sequences_hold_non_negative_integers(spec) -> None:
    with pytest.raises(SelectionError, match="layers"):
        parse_selection(spec, range(10), "layers")


def test_duplicates_and_overlaps_count_once() -> None:
    assert parse_selection("3,3,1-4,2-3", range(10), "steps") == [1, 2, 3, 4]
    assert parse_selection([4, 4, 1], range(10), "steps") == [1, 4]
    assert parse_intervals("0-4,2-6,6", "x").count_within(0, 100) == 7


def test_whitespace_is_ignored_around_items_and_dashes() -> None:
    assert parse_selection(" 0 , 3 - 5 ,\t9 ", range(10), "steps") == [0, 3, 4, 5, 9]
    with pytest.raises(SelectionError, match="cannot read '1 2'"):
        parse_selection("1 2", range(10), "steps")


def test_count_within_clips_without_refusing() -> None:
    parsed = parse_intervals("0,8-20,40", "x")
    assert parsed.count_within(0, 10) == 3  # 0, 8, 9
    assert parsed.count_within(0, 50) == 15
    assert parsed.count_within(100, 200) == 0


def test_format_spans() -> None:
    assert format_spans([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_spans([3, 1, 2, 2]) == "1-3"
    assert format_spans([]) == "none"


# -- every consumer reads the same rule -----------------------------------------------------------------------


def _kept_layers(layers: list[int]):
    from pi0viz.core.synthetic import synthetic_bundle

    b = synthetic_bundle(num_steps=2, num_layers=len(layers), num_action_tokens=3)
    b.layer_indices = np.asarray(layers, np.int32)
    return b


def test_render_sweep_and_episode_agree_on_a_range_over_kept_layers(tmp_path) -> None:
    from pi0viz.episode.aggregate import Selection, call_maps
    from pi0viz.render import RenderOptions, render_bundle
    from pi0viz.sweep.attention import summarize_call

    b = _kept_layers([2, 10, 17])
    assert summarize_call(b, layers="0-17")["layer_indices"].tolist() == [2, 10, 17]  # the sweep used to refuse
    assert call_maps(b, Selection(layers="0-17")).layers == [2, 10, 17]
    render_bundle(b, tmp_path, RenderOptions(layers="0-17", steps="0-100000000000", action_tokens="0", workers=1))
    assert sorted(p.name for p in (tmp_path / "inference_timestep_0" / "diffusion_timestep_0" / "action_token_0")
                  .iterdir()) == ["layer_10", "layer_17", "layer_2"]
    for consumer in (lambda: summarize_call(b, layers="5"), lambda: call_maps(b, Selection(layers="5")),
                     lambda: render_bundle(b, tmp_path / "x", RenderOptions(layers="5", workers=1))):
        with pytest.raises(SelectionError, match=r"\[5\] not in this capture, which has 2,10,17"):
            consumer()


def test_the_sweep_reads_tasks_against_its_suite_before_anything_runs(tmp_path) -> None:
    from pi0viz.sweep.engine import RunOptions, run_sweep
    from pi0viz.sweep.plan import SweepSettings

    with pytest.raises(SelectionError, match=r"^--tasks: \[12\] not in libero_spatial, which has 0-9$"):
        run_sweep(SweepSettings(), RunOptions(out=str(tmp_path / "run"), task_ids="0,12"))
    with pytest.raises(SelectionError, match="runs backwards"):
        run_sweep(SweepSettings(steps="9-0"), RunOptions(out=str(tmp_path / "run"), task_ids="0-100000000000",
                                                         episodes_per_task=1))
    assert not (tmp_path / "run").exists()
