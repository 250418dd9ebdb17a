"""Pareto frontier and `--min-recall` selection on hand-made rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from defectopt.errors import DefectoptError
from defectopt.report.pareto import column_for, pareto_front, pareto_mask, select_min_recall

NAN = math.nan


def rows(*tuples, cols=("id", "recall", "latency_ms")):
    return pd.DataFrame([dict(zip(cols, t)) for t in tuples])


def kept(frame, a="recall", b="latency"):
    return sorted(frame.loc[pareto_mask(frame, a, b), "id"])


def test_max_min_frontier_drops_dominated_rows():
    f = rows((1, 0.99, 40.0), (2, 0.95, 5.0), (3, 0.90, 6.0), (4, 0.80, 1.0), (5, 0.94, 5.0))
    # 3 is worse than 2 in both; 5 ties 2 on latency but has lower recall -> dominated
    assert kept(f) == [1, 2, 4]


def test_exact_duplicates_of_a_frontier_point_are_all_kept():
    f = rows((1, 0.95, 5.0), (2, 0.95, 5.0), (3, 0.90, 5.0), (4, 0.95, 6.0))
    # 3: equal latency, worse recall; 4: equal recall, slower -> both dominated by 1 and 2
    assert kept(f) == [1, 2]


def test_all_equal_rows_are_all_on_the_frontier():
    f = rows((1, 0.9, 3.0), (2, 0.9, 3.0), (3, 0.9, 3.0))
    assert kept(f) == [1, 2, 3]


def test_both_maximize_and_both_minimize():
    f = pd.DataFrame({"id": [1, 2, 3, 4], "recall": [0.9, 0.8, 0.95, 0.9], "throughput_ips": [100, 300, 50, 90]})
    assert kept(f, "recall", "throughput") == [1, 2, 3]  # 4 ties 1 on recall, lower throughput
    g = pd.DataFrame({"id": [1, 2, 3, 4], "latency_ms": [1.0, 2.0, 0.5, 1.0], "size_mb": [10.0, 1.0, 20.0, 10.0]})
    assert kept(g, "latency", "size") == [1, 2, 3, 4]  # 1 and 4 are duplicates
    g.loc[3, "size_mb"] = 11.0
    assert kept(g, "latency", "size") == [1, 2, 3]


def test_direction_comes_from_the_metric_definitions():
    # FNR is minimized: the same numbers as recall give the mirrored frontier
    f = pd.DataFrame({"id": [1, 2, 3], "fnr": [0.01, 0.05, 0.10], "latency_ms": [10.0, 5.0, 6.0]})
    assert kept(f, "fnr", "latency") == [1, 2]
    f2 = pd.DataFrame({"id": [1, 2, 3], "recall": [0.01, 0.05, 0.10], "latency_ms": [10.0, 5.0, 6.0]})
    assert kept(f2, "recall", "latency") == [2, 3]


def test_rows_missing_a_metric_are_never_on_the_frontier():
    f = rows((1, 0.9, NAN), (2, 0.8, 2.0), (3, NAN, 0.1))
    assert kept(f) == [2]
    assert kept(pd.DataFrame(columns=["id", "recall", "latency_ms"])) == []


def test_front_sorted_best_first_and_unknown_metric_is_a_user_error():
    f = rows((1, 0.99, 40.0), (2, 0.95, 5.0), (3, 0.8, 1.0))
    assert list(pareto_front(f, "latency", "recall")["id"]) == [3, 2, 1]
    assert list(pareto_front(f, "recall", "latency")["id"]) == [1, 2, 3]
    with pytest.raises(DefectoptError, match="unknown metric 'speed'"):
        pareto_mask(f, "recall", "speed")
    with pytest.raises(DefectoptError, match="not a column"):
        pareto_mask(f, "recall", "size")
    assert column_for("memory", pd.DataFrame(columns=["peak_mb"])) == "peak_mb"


def budget_rows():
    cols = ("id", "lineage", "device", "backend", "recall", "recall_ci_low", "latency_ms", "size_mb")
    return pd.DataFrame([dict(zip(cols, t)) for t in [
        (1, "t", "cpu", "torch", 0.99, 0.96, 40.0, 90.0),
        (2, "a", "cpu", "torch", 0.97, 0.93, 8.0, 9.0),     # first that passes 0.9, not the fastest
        (3, "b", "cpu", "onnxruntime", 0.96, 0.91, 3.0, 2.5),  # fastest passing 0.9
        (4, "c", "cpu", "openvino", 0.90, 0.85, 1.0, 2.0),  # fastest overall, CI too low
        (5, "d", "cpu", "torch", 0.97, 0.94, 3.0, 3.0),     # ties 3 on latency with a better CI
        (6, "e", "cpu", "torch", 0.98, NAN, 0.5, 0.1),      # no CI: never qualifies
    ]])


def test_min_recall_picks_the_best_not_the_first():
    choice = select_min_recall(budget_rows(), 0.9)
    assert int(choice.row["id"]) == 5 and choice.qualified == 4 and choice.by == "latency_ms"
    assert int(select_min_recall(budget_rows(), 0.95).row["id"]) == 1
    assert int(select_min_recall(budget_rows(), 0.9, by="size").row["id"]) == 3
    assert int(select_min_recall(budget_rows(), 0.85).row["id"]) == 4
    # the bound is inclusive
    assert int(select_min_recall(budget_rows(), 0.96).row["id"]) == 1


def test_min_recall_none_qualifies_is_a_clear_error():
    with pytest.raises(DefectoptError, match=r"no model has a recall CI lower bound >= 0.97; the best is model 1 .* 0.960"):
        select_min_recall(budget_rows(), 0.97)
    with pytest.raises(DefectoptError, match="between 0 and 1"):
        select_min_recall(budget_rows(), 1.5)
    with pytest.raises(DefectoptError, match="--by"):
        select_min_recall(budget_rows(), 0.9, by="cost")
    empty = budget_rows().assign(recall_ci_low=NAN)
    with pytest.raises(DefectoptError, match="no row has a recall confidence interval"):
        select_min_recall(empty, 0.5)


def crowded_study_rows(n_near: int = 40) -> pd.DataFrame:
    """A study-like frame: many models near recall 1.0 at 1-3 ms, a few slow or weak ones."""
    near = [(i, 0.985 + 0.0003 * (i % 30), 1.0 + 0.05 * i) for i in range(1, n_near + 1)]
    far = [(100, 0.70, 200.0), (101, 0.79, 0.5), (102, 0.55, 8.0), (103, 0.999, 6.0)]
    f = rows(*near, *far)
    return f.assign(technique=["distill"] * n_near + ["finetune", "quantize-qat", "prune", "finetune"],
                    backend="openvino", device="cpu", dtype="fp32",
                    lineage=[f"efficientnet_lite2 → efficientnet_lite0[KD α0.5] → step{i}" for i in f["id"]])


def test_plot_labels_every_frontier_point_and_drops_labels_that_would_overlap():
    import matplotlib.pyplot as plt

    from defectopt.report.plots import tradeoff_figure

    frame = crowded_study_rows()
    fig, labels = tradeoff_figure(frame, "latency", "recall")
    try:
        renderer = fig.canvas.get_renderer()
        area = fig.axes[0].bbox
        texts = [a.get_text() for a in labels]
        front_ids = set(pareto_front(frame, "latency_ms", "recall")["id"])
        assert {f"#{i} " for i in front_ids} <= {t.split(" ", 1)[0] + " " for t in texts}
        assert len(labels) < len(frame), "a crowded plot must leave some points unlabelled"
        others = [a.get_window_extent(renderer) for a in labels if int(a.get_text().split()[0][1:]) not in front_ids]
        assert others, "room was left for labels beyond the frontier"
        for i, box in enumerate(others):
            assert area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
            assert not any(box.overlaps(other) for other in others[i + 1:])
    finally:
        plt.close(fig)
