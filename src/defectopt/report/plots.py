"""Tradeoff scatter plots (matplotlib, Agg): every row a labelled point, the Pareto frontier a line.

x uses a log scale when its range spans more than 10x (latencies of a ViT-B teacher and an INT8
student differ by 20-50x; on a linear axis the small models collapse into one corner).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from defectopt import metrics
from defectopt.errors import DefectoptError
from defectopt.report.pareto import column_for, pareto_front

LOG_X_SPAN = 10.0


def axis_label(col: str) -> str:
    m = metrics.METRICS.get(col)
    arrow = "↑ better" if m and m.direction == metrics.MAXIMIZE else "↓ better"
    unit = f" ({m.unit})" if m and m.unit else ""
    return f"{col}{unit}, {arrow}"


def point_label(row: pd.Series) -> str:
    """`#7 mobilevit_s[KD α0.5] → int8-static (onnxruntime)`: the id and the last two lineage steps."""
    steps = str(row.get("lineage") or row.get("alias") or "").split(" → ")
    tail = " → ".join(steps[-2:])
    return f"#{int(row['id'])} {tail} ({row['backend']})"


def tradeoff_plot_png(frame: pd.DataFrame, x: str, y: str, *, pareto: bool = True, title: str | None = None) -> bytes:
    """PNG bytes of the y-vs-x scatter of `frame` with its frontier."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    col_x, col_y = column_for(x, frame), column_for(y, frame)
    data = frame.copy()
    data[col_x] = pd.to_numeric(data[col_x], errors="coerce")
    data[col_y] = pd.to_numeric(data[col_y], errors="coerce")
    data = data.dropna(subset=[col_x, col_y])
    if data.empty:
        raise DefectoptError(f"no benchmarked row has both {col_x} and {col_y}; run 'defectopt bench' first")

    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    techniques = sorted(data["technique"].fillna("?").unique())
    cmap = plt.get_cmap("tab10")
    markers = {"torch": "o", "onnxruntime": "s", "openvino": "D", "tensorrt": "^"}
    for i, tech in enumerate(techniques):
        sub = data[data["technique"].fillna("?") == tech]
        for backend, part in sub.groupby("backend"):
            ax.scatter(part[col_x], part[col_y], s=55, color=cmap(i % 10), marker=markers.get(backend, "v"),
                       edgecolor="black", linewidth=0.5, zorder=3,
                       label=f"{tech} · {backend}")
    front = None
    if pareto:
        front = pareto_front(data, col_x, col_y).sort_values(col_x, kind="stable")
        if len(front):
            ax.plot(front[col_x], front[col_y], color="crimson", linewidth=1.6, linestyle="--", marker="o",
                    markersize=11, markerfacecolor="none", markeredgecolor="crimson", zorder=2, label="Pareto frontier")
    front_ids = set(zip(front["id"], front["device"], front["backend"], front["dtype"].fillna(""))) if front is not None else set()
    xs = data[col_x]
    if (xs > 0).all() and xs.max() / xs.min() > LOG_X_SPAN:
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    labels = []
    for _, row in data.iterrows():
        on_front = (row["id"], row["device"], row["backend"], row["dtype"] if pd.notna(row["dtype"]) else "") in front_ids
        labels.append(ax.annotate(point_label(row), (row[col_x], row[col_y]), textcoords="offset points", xytext=(6, 5),
                                  fontsize=7.5, fontweight="bold" if on_front else "normal",
                                  color="black" if on_front else "dimgray"))
    _spread_labels(fig, labels)
    ax.set_xlabel(axis_label(col_x))
    ax.set_ylabel(axis_label(col_y))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"{col_y} vs {col_x}")
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# Offsets (points) tried in turn for a label that would overlap one already placed.
_OFFSETS = [(6, 5, "left"), (6, -12, "left"), (-6, 5, "right"), (-6, -12, "right"),
            (6, 16, "left"), (6, -23, "left"), (-6, 16, "right"), (-6, -23, "right"), (6, 27, "left"), (6, -34, "left")]


def _spread_labels(fig, labels) -> None:
    """Move each label to the first candidate offset where it overlaps no earlier label."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    for ann in labels:
        for dx, dy, ha in _OFFSETS:
            ann.set_position((dx, dy))
            ann.set_horizontalalignment(ha)
            box = ann.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(other) for other in placed):
                break
        else:
            ann.set_position((6, 5))
            ann.set_horizontalalignment("left")
            box = ann.get_window_extent(renderer)
        placed.append(box)


def write_tradeoff_plot(frame: pd.DataFrame, x: str, y: str, out: Path, *, pareto: bool = True, title: str | None = None) -> Path:
    from defectopt.report.table import write_atomic

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DefectoptError(f"plot output must be a .png file, got {out}")
    return write_atomic(out, tradeoff_plot_png(frame, x, y, pareto=pareto, title=title))
