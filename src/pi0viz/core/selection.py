"""The one selection grammar: which denoising steps, layers, action tokens, tasks or episodes a command uses.

Every `pi0viz` command and examples/libero/main.py read `--steps`, `--layers`, `--action-tokens`, `--tasks`
(and the library's `steps=`, `layers=`, ... options) through `parse_selection`, so a selection string means
the same thing everywhere:

    spec      := "all" | item ("," item)*          whitespace around items and around "-" is ignored
    item      := N | A "-" B                         non-negative integers, A <= B, B inclusive

- None or "all" selects everything available.
- A range selects the available values inside it (clipping): layers "0-17" of a capture that kept layers
  2, 10, 17 selects 2, 10, 17; "0-100000000000" on steps 0..9 selects 0..9. A range holding none of the
  available values is an error.
- A single number must be available; otherwise the error names what is available.
- Duplicates and overlaps are allowed and count once; the result follows the order of `available`.
- Empty items ("0,,3", "0,"), negative numbers, backwards ranges ("5-3") and anything else are errors.

A range is never expanded into a list: the spec is parsed into intervals and the available values are tested
against them, so "0-100000000000" costs the same as "0-9". Where the available values are not known yet (a
sweep's tasks before the suite is loaded, a disk estimate before the model ran), `parse_intervals` checks the
syntax alone and `Intervals.count_within` counts a selection inside a bound without expanding it.

Every fault is a `SelectionError` with one line: what was wrong and what was expected.
"""

from __future__ import annotations

import bisect
import dataclasses
import operator
import re
from typing import Iterable, Sequence

import numpy as np

from pi0viz.errors import SelectionError

SYNTAX = "'all' or comma-separated numbers and inclusive ranges, e.g. '0,3-5,9'"
_ITEM = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")
_MAX_DIGITS = 1000  # far beyond any index; keeps int() clear of Python's 4300-digit limit


@dataclasses.dataclass(frozen=True)
class Intervals:
    """A parsed selection: the ranges and the single numbers it names (None from `parse_intervals` = all).

    Attributes:
        ranges: (lo, hi) inclusive bounds of each "A-B" item, in the order given.
        singles: each single number "N", in the order given (each must be available).
        text: the spec as the user wrote it (for messages).
    """

    ranges: tuple[tuple[int, int], ...]
    singles: tuple[int, ...]
    text: str
    range_texts: tuple[str, ...] = ()  # each range as written ("0 - 17"), for messages

    def __post_init__(self) -> None:
        # every item as sorted, disjoint inclusive intervals: membership is one bisect, whatever the ranges span
        merged: list[list[int]] = []
        for lo, hi in sorted([*self.ranges, *((v, v) for v in self.singles)]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        object.__setattr__(self, "_merged", [(lo, hi) for lo, hi in merged])
        object.__setattr__(self, "_starts", [lo for lo, _ in merged])

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        i = bisect.bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._merged[i][1]

    def count_within(self, lo: int, hi: int) -> int:
        """How many integers of [lo, hi) the selection names (ranges clipped to the bound; no refusal).

        For estimates made before the available values are known (e.g. the disk a sweep will use).
        """
        return sum(max(0, min(b, hi - 1) - max(a, lo) + 1) for a, b in self._merged)

    def select(self, available: Iterable[int], what: str, *, within: str = "this capture") -> list[int]:
        """The values of `available` this selection names, in `available`'s order (see the module doc).

        `within` names where the values live in messages ("this capture", "libero_spatial").
        """
        have = [int(a) for a in available]
        have_set = set(have)
        missing = sorted({v for v in self.singles if v not in have_set})
        if missing:
            raise SelectionError(f"{what}: {missing} not in {within}, which has {format_spans(have)}")
        texts = self.range_texts or tuple(f"{lo}-{hi}" for lo, hi in self.ranges)
        for (lo, hi), text in zip(self.ranges, texts):
            if not any(lo <= v <= hi for v in have):
                raise SelectionError(f"{what}: range {text!r} holds none of {within}'s {format_spans(have)}")
        picked = [v for v in have if v in self]
        if not picked:  # only when nothing is available at all
            raise SelectionError(f"{what}: {self.text!r} selects nothing; {within} has {format_spans(have)}")
        return picked


def parse_intervals(spec: str | Sequence[int] | None, what: str) -> Intervals | None:
    """Check a selection's syntax without knowing what is available; None = everything ("all" or None).

    A sequence of ints is taken as single numbers (each must be available when selected).
    Raises SelectionError (one line) on bad syntax, negative numbers, backwards ranges or an empty spec.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        if isinstance(spec, (bytes, bytearray)) or not isinstance(spec, Iterable):  # e.g. steps=7: a number
            raise SelectionError(f"{what}: expected a selection such as \"{spec!r:.20}\" as text or a list of "
                                 f"integers, got {type(spec).__name__}; {SYNTAX}")
        values = []
        for v in spec:
            try:
                if isinstance(v, bool):
                    raise TypeError
                values.append(operator.index(v))  # ints and numpy integers; not floats, not strings
            except TypeError:
                raise SelectionError(f"{what}: expected integers, got {v!r}") from None
        negative = [v for v in values if v < 0]
        if negative:
            raise SelectionError(f"{what}: negative value {negative[0]}; indices start at 0")
        if not values:
            raise SelectionError(f"{what}: the selection is empty; expected {SYNTAX}")
        return Intervals(ranges=(), singles=tuple(values), text=",".join(map(str, values)))
    text = spec.strip()
    if text.lower() == "all":
        return None
    if not text:
        raise SelectionError(f"{what}: the selection is empty; expected {SYNTAX}")
    ranges: list[tuple[int, int]] = []
    range_texts: list[str] = []
    singles: list[int] = []
    for raw in text.split(","):
        item = raw.strip()
        m = _ITEM.fullmatch(item)
        if m is None:
            why = " (indices start at 0; negative numbers do not count from the end)" if item.startswith("-") else ""
            raise SelectionError(f"{what}: cannot read {item!r}{why}; use {SYNTAX}")
        if any(g is not None and len(g) > _MAX_DIGITS for g in m.groups()):
            raise SelectionError(f"{what}: a number of {len(item)} characters; expected at most {_MAX_DIGITS} digits")
        lo = int(m.group(1))
        if m.group(2) is None:
            singles.append(lo)
            continue
        hi = int(m.group(2))
        if hi < lo:
            raise SelectionError(f"{what}: range {item!r} runs backwards; write it low-high, e.g. '{hi}-{lo}'")
        ranges.append((lo, hi))
        range_texts.append(item)
    return Intervals(ranges=tuple(ranges), singles=tuple(singles), text=text, range_texts=tuple(range_texts))


def parse_selection(spec: str | Sequence[int] | None, available: Iterable[int], what: str, *,
                    within: str = "this capture") -> list[int]:
    """Which of `available` a selection names, by the one grammar (module doc); None / "all" = all of them.

    Args:
        spec: the selection string (e.g. "0,3-5,9", "12-17", "all"), a sequence of ints, or None.
        available: the values that exist (original step / layer / action token / task ids), e.g.
            `bundle.layer_indices` or `range(n)`; ranges are tested against it, never expanded.
        what: how the user names the selection in messages, e.g. "--layers" or "layers".
        within: where the values live, for messages: "this capture" (default), "libero_spatial", ...

    Returns:
        The selected values, in the order of `available`.

    Raises:
        SelectionError: bad syntax, a single number that is not available, a range holding none of them.
    """
    parsed = parse_intervals(spec, what)
    if parsed is None:
        have = [int(a) for a in available]
        if not have:
            raise SelectionError(f"{what}: nothing to select; {within} has none")
        return have
    return parsed.select(available, what, within=within)


def format_spans(values: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (how a selection is written in labels and messages); [] -> "none"."""
    runs: list[list[int]] = []
    for v in sorted(set(int(v) for v in values)):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


INDEX_MAX = 2**31 - 1  # indices are stored as int32 (a bundle's inference_step, a tree's folder numbers)


def folder_index(value: object, what: str, error: type[Exception] = SelectionError) -> int:
    """`value` as an index that names a folder or is stored as int32 (an inference call's `inference_step`).

    Expected: a Python or numpy integer in 0..2^31-1. Everything else is refused rather than converted: 1.5 must
    not become 1 and overwrite call 1's tree, True is not 1, "1" is text, -1 and 2**40 name no folder we write.
    Raises:
        `error` (a Pi0vizError subclass) with one line naming `what` and what was expected.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 0 <= int(value) <= INDEX_MAX:
        shown = repr(value.item() if isinstance(value, np.generic) else value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise error(f"{what} must be an integer in 0..{INDEX_MAX}, got {shown} "
                    f"({type(value).__name__})")
    return int(value)
