"""The tradeoff table: the view as a DataFrame plus McNemar p-values, and its renderings.

`load_table()` reads the `tradeoff` view and adds, per row with a parent, McNemar's paired
test of its recall against the parent's on the same test images (`p_vs_parent`, with the
discordant counts). Renderings: a Rich table for the terminal, Markdown, CSV and JSON. CSV/JSON
carry the raw numbers of every shown column; Rich/Markdown carry formatted text.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from defectopt.errors import DefectoptError
from defectopt.report import stats
from defectopt.store.db import Store

# (column, header, kind): kind picks the text formatting of Rich/Markdown cells.
DISPLAY_COLUMNS: list[tuple[str, str, str]] = [
    ("id", "id", "int"),
    ("lineage", "lineage", "text"),
    ("technique", "technique", "text"),
    ("device", "device", "text"),
    ("backend", "backend", "text"),
    ("dtype", "dtype", "text"),
    ("batch", "batch", "int"),
    ("recall", "recall [95% CI]", "recall"),
    ("precision", "precision", "frac"),
    ("f1", "F1", "frac"),
    ("fnr", "FNR", "frac"),
    ("latency_ms", "latency p50 ms", "num"),
    ("throughput_ips", "img/s", "num"),
    ("size_mb", "size MB", "num"),
    ("peak_mb", "peak MB", "num"),
    ("cost_per_1m", "$ / 1M img", "money"),
    ("speedup_vs_teacher", "speedup vs teacher", "speedup"),
    ("drecall_vs_teacher", "Δrecall vs teacher", "delta"),
    ("drecall_vs_parent", "Δrecall vs parent (McNemar p)", "delta_p"),
]
# Extra raw columns machine formats keep beside the shown ones.
RAW_EXTRA = ["alias", "dataset", "parent_id", "teacher_id", "threads", "recall_ci_low", "recall_ci_high",
             "p_vs_parent", "mcnemar_b", "mcnemar_c", "mcnemar_method"]
FORMATS = ("rich", "md", "csv", "json")


def load_table(store: Store, *, device: str | None = None, dataset: str | None = None,
               ids: list[int] | None = None) -> pd.DataFrame:
    """The tradeoff view (filtered) with McNemar p-values of recall vs parent."""
    from sqlalchemy import select

    from defectopt.store.queries import recall_extras, tradeoff_frame
    from defectopt.store.schema import Dataset

    frame = tradeoff_frame(store, device=device, dataset=dataset, ids=ids)
    if dataset and frame.empty:
        with store.session() as s:
            names = list(s.scalars(select(Dataset.name)))
        if dataset not in names:
            raise DefectoptError(f"no dataset named '{dataset}'; known: {', '.join(names) or 'none yet'}")
    with store.session() as s:
        tasks = dict(s.execute(select(Dataset.name, Dataset.task)).all())
    extras = recall_extras(store, [*frame["recall_row_id"].dropna(), *frame["parent_recall_row_id"].dropna()])
    p_vals, bs, cs, methods = [], [], [], []
    for _, row in frame.iterrows():
        test = None
        child, parent = row["recall_row_id"], row["parent_recall_row_id"]
        if pd.notna(child) and pd.notna(parent):
            test = stats.mcnemar_from_extras(extras.get(int(parent), {}), extras.get(int(child), {}), tasks.get(row["dataset"]))
        p_vals.append(test.p_value if test else None)
        bs.append(test.b if test else None)
        cs.append(test.c if test else None)
        methods.append(test.method if test else None)
    frame["p_vs_parent"] = pd.Series(p_vals, index=frame.index, dtype="float64")
    frame["mcnemar_b"] = pd.Series(bs, index=frame.index, dtype="Int64")
    frame["mcnemar_c"] = pd.Series(cs, index=frame.index, dtype="Int64")
    frame["mcnemar_method"] = pd.Series(methods, index=frame.index, dtype="object")
    return frame


def sort_table(frame: pd.DataFrame, column: str | None) -> pd.DataFrame:
    """Sort by a column (or metric alias), best first by the metric's direction."""
    if not column:
        return frame
    from defectopt import metrics
    from defectopt.report.pareto import column_for

    if column in frame.columns and column not in metrics.METRICS:
        return frame.sort_values(column, kind="stable", na_position="last")
    col = column_for(column, frame)
    ascending = metrics.direction(col) == metrics.MINIMIZE
    return frame.sort_values(col, ascending=ascending, kind="stable", na_position="last")


# --- cell formatting ------------------------------------------------------------------------

def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or (not isinstance(v, str) and pd.isna(v))


def format_p(p) -> str:
    if _missing(p):
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def format_cell(row: pd.Series, col: str, kind: str) -> str:
    v = row.get(col)
    if kind == "recall":
        if _missing(v):
            return ""
        lo, hi = row.get("recall_ci_low"), row.get("recall_ci_high")
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if not (_missing(lo) or _missing(hi)) else f"{v:.3f}"
    if _missing(v):
        return ""
    if kind == "int":
        return str(int(v))
    if kind == "text":
        return str(v)
    if kind == "frac":
        return f"{v:.3f}"
    if kind == "num":
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if kind == "money":
        return f"{v:.3g}"
    if kind == "speedup":
        return f"{v:.2f}×"
    if kind == "delta":
        return f"{v:+.3f}"
    if kind == "delta_p":
        p = format_p(row.get("p_vs_parent"))
        return f"{v:+.3f} ({p})" if p else f"{v:+.3f}"
    return str(v)


def display_rows(frame: pd.DataFrame, *, mark: bool = False) -> tuple[list[str], list[list[str]]]:
    headers = [h for _, h, _ in DISPLAY_COLUMNS]
    if mark:
        headers = ["pareto", *headers]
    rows = []
    for _, row in frame.iterrows():
        cells = [format_cell(row, col, kind) for col, _, kind in DISPLAY_COLUMNS]
        if mark:
            cells = ["★" if bool(row.get("pareto")) else "", *cells]
        rows.append(cells)
    return headers, rows


# --- renderings -----------------------------------------------------------------------------

# The terminal table packs the same columns into two-line cells so it fits ~150 columns; the
# technique is visible as the last step of the lineage (md/csv/json keep a technique column).
RICH_COLUMNS: list[tuple[str, str]] = [
    ("id", "id"), ("lineage", "lineage"), ("runtime", "device\nbackend dtype"),
    ("batch", "batch"), ("recall", "recall\n[95% CI]"), ("precision", "prec."), ("f1", "F1"), ("fnr", "FNR"),
    ("latency_ms", "latency\nms p50"), ("throughput_ips", "img/s"), ("size_mb", "size\nMB"), ("peak_mb", "peak\nMB"),
    ("cost_per_1m", "$ per\n1M img"), ("speedup_vs_teacher", "speedup\nvs teacher"),
    ("drecall_vs_teacher", "Δrecall\nvs teacher"), ("drecall_vs_parent", "Δrecall vs\nparent (p)"),
]


def _rich_cell(row: pd.Series, col: str) -> str:
    kinds = {c: k for c, _, k in DISPLAY_COLUMNS}
    if col == "runtime":
        return f"{row['device']}\n{row['backend']} {row['dtype'] if not _missing(row['dtype']) else ''}".rstrip()
    if col == "recall":
        text = format_cell(row, col, "recall")
        return text.replace(" [", "\n[")
    if col == "drecall_vs_parent":
        return format_cell(row, col, "delta_p").replace(" (", "\n(")
    return format_cell(row, col, kinds[col])


def to_rich(frame: pd.DataFrame, *, title: str = "tradeoff", mark: bool = False, highlight_id: int | None = None):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=True)
    if mark:
        table.add_column("pareto", justify="center", no_wrap=True)
    for col, header in RICH_COLUMNS:
        wraps = col == "lineage"
        table.add_column(header, justify="left" if wraps or col == "runtime" else "right", no_wrap=not wraps,
                         min_width=30 if wraps else None)
    for _, row in frame.iterrows():
        cells = [_rich_cell(row, col) for col, _ in RICH_COLUMNS]
        if mark:
            cells = ["★" if bool(row.get("pareto")) else "", *cells]
        style = "bold green" if highlight_id is not None and int(row["id"]) == highlight_id else None
        # Text, not markup: lineage labels such as "[no-KD]" look like Rich style tags
        table.add_row(*(Text(c) for c in cells), style=style)
    return table


def print_table(console, table) -> None:
    """Print a Rich table at its natural width even on a narrower terminal: overflowing lines
    read better than cells squeezed to ellipses."""
    from rich.measure import Measurement

    fit = Measurement.get(console, console.options.update_width(10_000), table)
    if fit.minimum <= console.width:
        console.print(table)
        return
    needed = min(fit.maximum, fit.minimum + 20)  # the 20 go to the lineage column (it wraps)
    if needed <= console.width:
        console.print(table)
        return
    saved = console.width
    console.width = needed  # print(width=) cannot exceed the console's own width
    try:
        console.print(table, crop=False)
    finally:
        console.width = saved


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, *, mark: bool = False) -> str:
    headers, rows = display_rows(frame, mark=mark)
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
             "|" + "|".join("---" if h in ("lineage", "technique", "device", "backend", "dtype", "pareto") else "---:" for h in headers) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def machine_frame(frame: pd.DataFrame, *, mark: bool = False) -> pd.DataFrame:
    cols = [c for c, _, _ in DISPLAY_COLUMNS] + [c for c in RAW_EXTRA if c in frame.columns]
    if mark and "pareto" in frame.columns:
        cols = ["pareto", *cols]
    return frame[[c for c in cols if c in frame.columns]]


def to_csv(frame: pd.DataFrame, *, mark: bool = False) -> str:
    return machine_frame(frame, mark=mark).to_csv(index=False)


def to_json(frame: pd.DataFrame, *, mark: bool = False) -> str:
    records = json.loads(machine_frame(frame, mark=mark).to_json(orient="records"))
    return json.dumps(records, indent=2, ensure_ascii=False) + "\n"


def render(frame: pd.DataFrame, fmt: str, *, mark: bool = False) -> str:
    """Text of the table in md, csv or json (Rich renders to the console instead)."""
    if fmt == "md":
        return to_markdown(frame, mark=mark)
    if fmt == "csv":
        return to_csv(frame, mark=mark)
    if fmt == "json":
        return to_json(frame, mark=mark)
    if fmt == "rich":
        from rich.console import Console

        with open(os.devnull, "w") as sink:
            console = Console(record=True, width=240, file=sink)
            print_table(console, to_rich(frame, mark=mark))
        return console.export_text()
    raise DefectoptError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write a file via a temporary sibling and rename, so readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DefectoptError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an output file should read like any other
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DefectoptError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
