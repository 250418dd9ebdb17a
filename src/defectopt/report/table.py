"""The tradeoff table: the view as a DataFrame plus McNemar p-values, and its renderings.

`load_table()` reads the `tradeoff` view and adds, per row with a parent, McNemar's paired
test of its recall against the parent's on the same test images (`p_vs_parent`, with the
discordant counts). Renderings (through `defectopt.report.listing`): a terminal table with
two-line cells, plain aligned text, Markdown, CSV and JSON. CSV/JSON carry the raw numbers of
every shown column plus every other column the view returns; the others carry formatted text.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from defectopt.errors import DefectoptError
from defectopt.report import listing, stats
from defectopt.report.listing import Column, Listing
from defectopt.store.db import Store
from defectopt.metrics import N

# (column, header, kind): kind picks the text formatting of Rich/Markdown cells.
DISPLAY_COLUMNS: list[tuple[str, str, str]] = [
    ("id", "id", "int"),
    ("lineage", "lineage", "text"),
    ("technique", "technique", "text"),
    ("device", "device", "text"),
    ("backend", "backend", "text"),
    ("dtype", "dtype", "text"),
    # latency is read at batch 1, throughput at its best batch size (store/queries.py): say which
    ("batch", "best batch", "int"),
    (N.recall, "recall [95% CI]", "recall"),
    ("precision", "precision", "frac"),
    (N.f1, "F1", "frac"),
    (N.fnr, "FNR", "frac"),
    (N.latency_ms, "latency ms (batch 1) [p10, p90]", "latency"),
    (N.throughput_ips, "img/s", "num"),
    (N.size_mb, "size MB", "num"),
    (N.peak_mb, "peak MB", "num"),
    (N.cost_per_1m, "$ / 1M img", "money"),
    (N.speedup_vs_teacher, "speedup vs teacher", "speedup"),
    ("drecall_vs_teacher", "Δrecall vs teacher", "delta"),
    ("drecall_vs_parent", "Δrecall vs parent (McNemar p)", "delta_p"),
]
# Extra raw columns machine formats keep beside the shown ones.
RAW_EXTRA = ["alias", "dataset", "parent_id", "teacher_id", "threads", N.recall_ci_low, N.recall_ci_high,
             "p_vs_parent", "mcnemar_b", "mcnemar_c", "mcnemar_method"]
FORMATS = ("table", "md", "csv", "json")


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


def _number(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"


def _fraction(v: float) -> str:
    return f"{v:.3f}"


# Cell kinds printed as "value [low, high]": the columns holding the range and the number format.
_RANGED = {"recall": (N.recall_ci_low, N.recall_ci_high, _fraction),  # recall with its 95% CI
           "latency": (N.latency_ms_p10, N.latency_ms_p90, _number)}       # latency with its p10 / p90


def format_cell(row: pd.Series, col: str, kind: str) -> str:
    v = row.get(col)
    if _missing(v):
        return ""
    if kind in _RANGED:
        low, high, fmt = _RANGED[kind]
        lo, hi = row.get(low), row.get(high)
        return fmt(v) if _missing(lo) or _missing(hi) else f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"
    if kind == "int":
        return str(int(v))
    if kind == "text":
        return str(v)
    if kind == "frac":
        return _fraction(v)
    if kind == "num":
        return _number(v)
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


def tradeoff_listing(frame: pd.DataFrame, *, mark: bool = False) -> Listing:
    """Every row with the shown columns (formatted text for md/plain) and, for CSV/JSON, the raw
    numbers of those plus the extras and any other column the view returns."""
    columns = [Column("pareto", numeric=False, text=_star)] if mark else []
    columns += [Column(col, header, numeric=kind != "text", text=_formatter(col, kind)) for col, header, kind in DISPLAY_COLUMNS]
    shown = {c.key for c in columns}
    extras = [c for c in RAW_EXTRA if c in frame.columns] + [c for c in frame.columns if c not in RAW_EXTRA]
    columns += [Column(c, machine_only=True) for c in extras if c not in shown and (c != "pareto" or mark)]
    return Listing(columns, frame.to_dict("records"))


def _star(value, _row) -> str:
    return "★" if not _missing(value) and bool(value) else ""


def _formatter(col: str, kind: str):
    return lambda _value, row: format_cell(row, col, kind)


# The terminal table packs the same columns into two-line cells so it fits ~150 columns; the
# technique is visible as the last step of the lineage (md/csv/json keep a technique column).
# Optional columns are the first to go on a narrower terminal.
TERMINAL_COLUMNS: list[tuple[str, str, bool]] = [
    ("id", "id", False), ("lineage", "lineage", False), ("runtime", "device\nbackend dtype", False),
    ("batch", "best\nbatch", True), (N.recall, "recall\n[95% CI]", False), ("precision", "prec.", True), (N.f1, "F1", True),
    (N.fnr, "FNR", True), (N.latency_ms, "latency ms b1\n[p10, p90]", False), (N.throughput_ips, "img/s", True),
    (N.size_mb, "size\nMB", False), (N.peak_mb, "peak\nMB", True), (N.cost_per_1m, "$ per\n1M img", True),
    (N.speedup_vs_teacher, "speedup\nvs teacher", True), ("drecall_vs_teacher", "Δrecall\nvs teacher", True),
    ("drecall_vs_parent", "Δrecall vs\nparent (p)", False),
]


def _terminal_cell(row, col: str) -> str:
    kinds = {c: k for c, _, k in DISPLAY_COLUMNS}
    if col == "runtime":
        return f"{row['device']}\n{row['backend']} {row['dtype'] if not _missing(row['dtype']) else ''}".rstrip()
    if col in (N.recall, N.latency_ms):
        return format_cell(row, col, kinds[col]).replace(" [", "\n[")
    if col == "drecall_vs_parent":
        return format_cell(row, col, "delta_p").replace(" (", "\n(")
    return format_cell(row, col, kinds[col])


def terminal_listing(frame: pd.DataFrame, *, title: str = "tradeoff", mark: bool = False,
                     highlight_id: int | None = None) -> Listing:
    columns = [Column("pareto", text=_star)] if mark else []
    columns += [Column(col, header, numeric=col not in ("lineage", "runtime"), wrap=col == "lineage", optional=optional,
                       text=(lambda c: lambda _v, row: _terminal_cell(row, c))(col))
                for col, header, optional in TERMINAL_COLUMNS]
    rows = frame.to_dict("records")
    styles = ["bold green" if highlight_id is not None and int(r["id"]) == highlight_id else None for r in rows]
    return Listing(columns, rows, title=title, row_styles=styles, show_lines=True)


def to_markdown(frame: pd.DataFrame, *, mark: bool = False) -> str:
    return listing.to_markdown(tradeoff_listing(frame, mark=mark))


def to_csv(frame: pd.DataFrame, *, mark: bool = False) -> str:
    return listing.to_csv(tradeoff_listing(frame, mark=mark))


def to_json(frame: pd.DataFrame, *, mark: bool = False) -> str:
    return listing.to_json(tradeoff_listing(frame, mark=mark))


def to_plain(frame: pd.DataFrame, *, title: str | None = None, mark: bool = False) -> str:
    table = tradeoff_listing(frame, mark=mark)
    table.title = title
    return listing.to_plain(table)


def render(frame: pd.DataFrame, fmt: str, *, mark: bool = False) -> str:
    """Text of the table in table (plain aligned text, every cell whole), md, csv or json."""
    if fmt == "md":
        return to_markdown(frame, mark=mark)
    if fmt == "csv":
        return to_csv(frame, mark=mark)
    if fmt == "json":
        return to_json(frame, mark=mark)
    if fmt in ("table", "rich"):
        return to_plain(frame, title="tradeoff", mark=mark)
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
