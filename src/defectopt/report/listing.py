"""A listing (columns + rows of raw values) and its renderings: a terminal table that fits the
terminal without cutting cells, plain aligned text, Markdown, CSV and JSON.

Why not let Rich shrink tables: Rich fits a table to the console by cutting cells to "…", and a
console that is not a terminal is 80 columns wide, so `defectopt models | grep efficientnet_b0`
found nothing. Here no cell is ever cut: plain text (pipes, files) prints every cell whole; on a
narrow terminal free-text columns wrap at spaces and optional columns are dropped, and when even
that does not fit, the table is printed wider than the terminal (lines wrap) rather than cut.

CSV and JSON carry raw values under stable snake_case keys (what scripts read); the table,
plain text and Markdown carry each column's formatted text under its human header.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.cells import cell_len

GAP = "  "  # between plain-text columns
FOLD_FLOOR = 12  # narrowest a free-text column gets on a terminal (its words then fold)


@dataclass(frozen=True)
class Column:
    key: str                      # CSV header and JSON key: stable, snake_case
    header: str | None = None     # what a person reads (default: the key)
    numeric: bool = False         # right-aligned
    wrap: bool = False            # free text that may wrap at spaces on a narrow terminal
    optional: bool = False        # dropped first when a terminal is too narrow
    machine_only: bool = False    # only in CSV/JSON (raw extras such as a full hash)
    # (raw value, whole row) -> cell text; the row is there for cells built from several values
    text: Callable[[Any, dict[str, Any]], str] | None = None

    @property
    def title(self) -> str:
        return self.header or self.key

    def cell(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        return self.text(value, row) if self.text else default_text(value)


@dataclass
class Listing:
    columns: list[Column]
    rows: list[dict[str, Any]]    # raw values by column key
    title: str | None = None
    show_header: bool = True
    show_lines: bool = False      # terminal: rules between rows (for multi-line cells)
    row_styles: list[str | None] = field(default_factory=list)  # terminal only, one per row


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:
        return False


def default_text(value: Any) -> str:
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(default_text, value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/NA become null, datetimes ISO strings, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if is_missing(value):
        return None
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / pandas scalars
        return jsonable(value.item())
    return str(value)


def _shown(listing: Listing) -> list[Column]:
    return [c for c in listing.columns if not c.machine_only]


# --- text renderings -------------------------------------------------------------------------

def _cell_width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def to_plain(listing: Listing) -> str:
    """Aligned columns, every cell whole on one line (for pipes, files and grep)."""
    cols = _shown(listing)
    grid = [[c.cell(r).replace("\n", " ") for c in cols] for r in listing.rows]
    if listing.show_header:
        grid.insert(0, [c.title.replace("\n", " ") for c in cols])
    widths = [max((cell_len(row[i]) for row in grid), default=0) for i in range(len(cols))]
    lines = [listing.title] if listing.title else []
    for row in grid:
        parts = []
        for text, width, col in zip(row, widths, cols):
            pad = " " * (width - cell_len(text))
            parts.append(pad + text if col.numeric else text + pad)
        lines.append(GAP.join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(listing: Listing) -> str:
    cols = _shown(listing)
    lines = [f"**{_md_escape(listing.title)}**", ""] if listing.title else []
    lines.append("| " + " | ".join(_md_escape(c.title) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in cols) + "|")
    lines += ["| " + " | ".join(_md_escape(c.cell(r)) for c in cols) + " |" for r in listing.rows]
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    if is_missing(value):
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(jsonable(value), ensure_ascii=False)
    return jsonable(value)


def to_csv(listing: Listing) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.key for c in listing.columns])
    for r in listing.rows:
        writer.writerow([_csv_value(r.get(c.key)) for c in listing.columns])
    return buf.getvalue()


def records(listing: Listing) -> list[dict[str, Any]]:
    return [{c.key: jsonable(r.get(c.key)) for c in listing.columns} for r in listing.rows]


def to_json(document: Any) -> str:
    """A listing as an array of records, or any document (dicts/lists of listings and values)."""
    def expand(obj):
        if isinstance(obj, Listing):
            return records(obj)
        if isinstance(obj, dict):
            return {k: expand(v) for k, v in obj.items()}
        return obj

    return json.dumps(jsonable(expand(document)), indent=2, ensure_ascii=False) + "\n"


def render_text(listings: Sequence[Listing], fmt: str) -> str:
    """plain ('table' off a terminal), md or csv of one or several listings (blank-line separated;
    CSV sections then start with a '# title' line)."""
    if fmt == "md":
        return "\n".join(to_markdown(x) for x in listings)
    if fmt == "csv":
        if len(listings) == 1:
            return to_csv(listings[0])
        return "\n".join((f"# {x.title}\n" if x.title else "") + to_csv(x) for x in listings)
    return "\n".join(to_plain(x) for x in listings)


# --- terminal --------------------------------------------------------------------------------

def _longest_word(text: str) -> int:
    return max((cell_len(w) for line in text.split("\n") for w in line.split(" ")), default=0)


def fit_widths(columns: list[Column], cells: list[list[str]], width: int, overhead: Callable[[int], int]
               ) -> tuple[list[int], list[int]]:
    """(indices of the columns kept, their content widths) so the table fits `width` if it can.

    Columns give up width in steps, each step only when the one before is not enough: headers
    wrap at spaces; free-text cells wrap at spaces; optional columns are dropped (last first);
    free text folds inside long words down to FOLD_FLOOR, if that makes it fit (otherwise the
    table is printed wider with words whole). IDs, aliases and numbers keep their widest cell.
    Within a step the excess comes from the columns with the most room first.
    """
    heads = [c.title for c in columns]
    body = [[row[i] for row in cells] for i in range(len(columns))]
    natural = [max([_cell_width(heads[i])] + [_cell_width(t) for t in body[i]]) for i in range(len(columns))]
    head_word = [_longest_word(h) for h in heads]
    whole_cells = [max([head_word[i]] + [_cell_width(t) for t in body[i]]) for i in range(len(columns))]
    words = [max([head_word[i]] + [_longest_word(t) for t in body[i]]) for i in range(len(columns))]
    wrap_floor = [words[i] if c.wrap else whole_cells[i] for i, c in enumerate(columns)]
    fold_floor = [min(wrap_floor[i], FOLD_FLOOR) if c.wrap else whole_cells[i] for i, c in enumerate(columns)]

    keep = list(range(len(columns)))
    optional = [i for i, c in enumerate(columns) if c.optional]
    while optional and sum(wrap_floor[i] for i in keep) + overhead(len(keep)) > width:
        keep.remove(optional.pop())
    widths = {i: natural[i] for i in keep}
    excess = sum(widths.values()) + overhead(len(keep)) - width
    passes = [whole_cells, wrap_floor]
    if sum(fold_floor[i] for i in keep) + overhead(len(keep)) <= width:
        passes.append(fold_floor)  # folding inside words only where it makes the table fit
    for floors in passes:
        while excess > 0:
            shrinkable = [i for i in keep if widths[i] > floors[i]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: (widths[i] - floors[i], widths[i]))
            widths[widest] -= 1
            excess -= 1
    return keep, [widths[i] for i in keep]


def print_terminal(console, listing: Listing) -> None:
    """A Rich table on a terminal: cells wrap or columns drop to fit; none is cut to '…'."""
    from rich.table import Table
    from rich.text import Text

    cols = _shown(listing)
    cells = [[c.cell(r) for c in cols] for r in listing.rows]
    # Rich's default box: one border per column plus one, and one space of padding each side.
    keep, widths = fit_widths(cols, cells, console.width, overhead=lambda n: 3 * n + 1)
    table = Table(title=Text(listing.title) if listing.title else None, show_header=listing.show_header,
                  show_lines=listing.show_lines)
    for i, w in zip(keep, widths):
        c = cols[i]
        table.add_column(c.title, justify="right" if c.numeric else "left", width=w, overflow="fold")
    styles = listing.row_styles or [None] * len(cells)
    for row, style in zip(cells, styles):
        # Text, not markup: labels such as "mobilevit_s[no-KD]" look like Rich style tags
        table.add_row(*(Text(row[i]) for i in keep), style=style)
    needed = sum(widths) + 3 * len(widths) + 1
    if needed <= console.width:
        console.print(table)
        return
    saved = console.width
    console.width = needed  # print(width=) cannot exceed the console's own width
    try:
        console.print(table, crop=False)
    finally:
        console.width = saved
