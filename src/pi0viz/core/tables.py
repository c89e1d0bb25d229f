"""The one way pi0viz writes a table cell that holds text from data (camera, object and task names, prompts).

Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` as a formula (and strip a leading tab or carriage
return first), so a prompt like `=HYPERLINK(...)` in a CSV would run when the file is opened: such a cell gets a
leading apostrophe, which spreadsheets show as text. Commas, quotes and newlines are the csv module's to quote, so
a cell can never split a row or a column. Numbers are written as numbers and never escaped (-0.5 stays a number).
Markdown tables (a sweep's results.md) take the same text escape plus `|` escaped and line breaks flattened.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | float | None


def text_cell(value: object) -> str:
    """Text from data as a cell that cannot start a formula: a leading apostrophe when it starts with one of
    FORMULA_STARTS; carriage returns become newlines (quoting commas, quotes and newlines is left to the csv
    module)."""
    text = str(value)
    text = "'" + text if text.startswith(FORMULA_STARTS) else text
    # the csv module quotes a field holding \n but not a bare \r (with \n line ends): a CR would split the row
    return text.replace("\r\n", "\n").replace("\r", "\n")


def number_cell(value: float | int | None, fmt: str = "%.6g") -> str:
    """A number as a cell; None and NaN are empty cells, infinities are written as `inf` / `-inf`."""
    if value is None:
        return ""
    if isinstance(value, bool):  # a bool is not a count: write it as text
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return ""
    return fmt % value


def csv_text(header: Sequence[object], rows: Iterable[Sequence[str]]) -> str:
    """A CSV document: the header's cells escaped with `text_cell`, then rows whose cells are already strings
    (made by `text_cell` or `number_cell`); quoting by the csv module, lines ending in \\n."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([text_cell(h) for h in header])
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[object], rows: Iterable[Sequence[str]]) -> Path:
    """Write `csv_text(header, rows)` atomically (core.writes: a failed write leaves no file and no temporary)."""
    from pi0viz.core.writes import atomic_write

    return atomic_write(path, csv_text(header, rows))


def markdown_cell(value: object) -> str:
    """Text from data as one Markdown table cell: `text_cell`'s escape, `|` and backslashes escaped, line breaks
    as spaces (a prompt with a newline or a pipe must not split the table)."""
    text = " ".join(text_cell(value).splitlines()) if value is not None else ""
    return text.replace("\\", "\\\\").replace("|", "\\|")
