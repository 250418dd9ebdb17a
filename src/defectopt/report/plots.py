"""Tradeoff scatter plots (matplotlib, Agg): every row a point, the Pareto frontier a line.

x uses a log scale when its range spans more than 10x (latencies of a ViT-B teacher and an INT8
student differ by 20-50x; on a linear axis the small models collapse into one corner).

Frontier points are always labelled; any other point is labelled only where its label fits
without covering one already placed. A study DB holds ~100 rows, most of them near recall 1.0,
and labelling every one printed an unreadable block of overlapping text exactly where the reader
looks (the NEU-DET study plot of sessions 24-31); an unlabelled point's id is in the table.
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
    import matplotlib.pyplot as plt

    fig, _ = tradeoff_figure(frame, x, y, pareto=pareto, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def tradeoff_figure(frame: pd.DataFrame, x: str, y: str, *, pareto: bool = True, title: str | None = None):
    """The matplotlib figure of the plot and the point labels it kept (frontier first)."""
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

    fig, ax = plt.subplots(figsize=(11.5, 6.5), dpi=110)
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
            lambda v, _: f"{v:g}" if f"{v:g}".lstrip("0.")[:1] in ("2", "5") else ""))  # 0.2, 0.5, 2, 5, 20, ...
    ax.set_xlabel(axis_label(col_x))
    ax.set_ylabel(axis_label(col_y))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"{col_y} vs {col_x}")
    # Outside the axes: inside, "best" is recomputed at every draw and covered data points once
    # the labels' leader lines were added.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, framealpha=0.85)
    # Lay out the axes first and keep the labels out of it, so a label is placed (and kept or
    # dropped) where it will be drawn.
    fig.tight_layout()
    frontier_labels, other_labels = [], []
    for _, row in data.sort_values(col_y, ascending=False, kind="stable").iterrows():
        on_front = (row["id"], row["device"], row["backend"], row["dtype"] if pd.notna(row["dtype"]) else "") in front_ids
        ann = ax.annotate(point_label(row), (row[col_x], row[col_y]), textcoords="offset points", xytext=(6, 5),
                          fontsize=7.5, fontweight="bold" if on_front else "normal",
                          color="black" if on_front else "dimgray",
                          # a leader line, hidden by _spread_labels for a label right beside its point
                          arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.5, shrinkA=0, shrinkB=3))
        ann.set_in_layout(False)
        (frontier_labels if on_front else other_labels).append(ann)
    kept = _spread_labels(ax, frontier_labels, other_labels)
    return fig, kept


# Offsets (points) tried in turn for a label that would overlap one already placed: beside the
# point first, then stepping away above and below it, on the right and then on the left.
_OFFSETS = [(dx, dy, "left" if dx > 0 else "right")
            for dy in (5, -12, 16, -23, 27, -34, 38, -45, 49, -56)
            for dx in (6, -6)]


def _spread_labels(ax, must_show, optional) -> list:
    """Place each label at the first candidate offset inside the axes where it overlaps no placed label.

    `must_show` (the frontier) are placed first and kept even where every offset overlaps;
    an `optional` label that fits nowhere is removed. Returns the kept labels.
    """
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    area = ax.bbox  # the plotting area: not over tick labels, title or legend (outside it)
    placed, kept = [], []
    for required, labels in ((True, must_show), (False, optional)):
        for ann in labels:
            for dx, dy, ha in _OFFSETS:
                ann.set_position((dx, dy))
                ann.set_horizontalalignment(ha)
                box = ann.get_window_extent(renderer).expanded(1.02, 1.1)
                inside = area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
                if inside and not any(box.overlaps(other) for other in placed):
                    break
            else:
                if not required:
                    ann.remove()
                    continue
                ann.set_position((6, 5))
                ann.set_horizontalalignment("left")
                box = ann.get_window_extent(renderer)
            dx, dy = ann.get_position()
            # only a label at the first offset (just right of and above its point) needs no leader
            # line: one to the left of its point reads as the label of whatever lies there
            ann.arrow_patch.set_visible((dx, dy) != _OFFSETS[0][:2])
            placed.append(box)
            kept.append(ann)
    return kept


def write_tradeoff_plot(frame: pd.DataFrame, x: str, y: str, out: Path, *, pareto: bool = True, title: str | None = None) -> Path:
    from defectopt.report.table import write_atomic

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DefectoptError(f"plot output must be a .png file, got {out}")
    return write_atomic(out, tradeoff_plot_png(frame, x, y, pareto=pareto, title=title))
