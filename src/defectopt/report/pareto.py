"""Pareto frontier over any two metrics, and the `--min-recall` selection.

Directions come from defectopt.metrics (the one place they are defined). A row is dominated
when another row is at least as good in both metrics and strictly better in one; so exact
duplicates of a frontier point are all kept, and a row that ties in one metric but is worse
in the other is dominated. Rows missing either metric are never on the frontier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from defectopt import metrics
from defectopt.errors import DefectoptError
from defectopt.metrics import N

# Metrics users may name whose view column is called differently.
_VIEW_COLUMN = {N.peak_rss_mb: N.peak_mb}


def column_for(name: str, frame: pd.DataFrame | None = None) -> str:
    """The tradeoff column holding metric `name` (an alias such as `latency` is accepted)."""
    metric = metrics.resolve(name)
    col = metric.name
    if frame is not None and col not in frame.columns:
        col = _VIEW_COLUMN.get(col, col)
        if col not in frame.columns:
            raise DefectoptError(f"metric '{name}' is not a column of the tradeoff table")
    return col


def _oriented(values: pd.Series, name: str) -> np.ndarray:
    """Values turned so that larger is better (minimized metrics are negated)."""
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return arr if metrics.direction(name) == metrics.MAXIMIZE else -arr


def pareto_mask(frame: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Boolean Series: True for the non-dominated rows of `frame` on metrics a and b."""
    col_a, col_b = column_for(a, frame), column_for(b, frame)
    va, vb = _oriented(frame[col_a], col_a), _oriented(frame[col_b], col_b)
    valid = ~(np.isnan(va) | np.isnan(vb))
    keep = np.zeros(len(frame), dtype=bool)
    idx = np.flatnonzero(valid)
    if idx.size:
        pa, pb = va[idx][:, None], vb[idx][:, None]
        # dominated[i] if some j: a_j >= a_i and b_j >= b_i and (a_j > a_i or b_j > b_i)
        ge = (va[idx][None, :] >= pa) & (vb[idx][None, :] >= pb)
        gt = (va[idx][None, :] > pa) | (vb[idx][None, :] > pb)
        dominated = (ge & gt).any(axis=1)
        keep[idx] = ~dominated
    return pd.Series(keep, index=frame.index, name="pareto")


def pareto_front(frame: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """The non-dominated rows, sorted along metric a (best first)."""
    front = frame[pareto_mask(frame, a, b)]
    col_a = column_for(a, frame)
    return front.sort_values(col_a, ascending=metrics.direction(col_a) == metrics.MINIMIZE, kind="stable")


@dataclass(frozen=True)
class Choice:
    row: pd.Series
    by: str  # the stored metric name the choice minimized
    qualified: int  # rows whose recall CI lower bound met the budget


def select_min_recall(frame: pd.DataFrame, min_recall: float, by: str = "latency") -> Choice:
    """The best row (lowest `by`: latency or size) whose recall CI lower bound is >= min_recall.

    Every qualifying row is compared, not the first found; ties on `by` go to the higher CI
    lower bound, then the higher recall, then the lower ID.
    """
    if not 0.0 <= min_recall <= 1.0:
        raise DefectoptError(f"--min-recall must be between 0 and 1, got {min_recall}")
    if by not in ("latency", "size"):
        raise DefectoptError(f"--by must be 'latency' or 'size', got '{by}'")
    col = column_for(by, frame)
    if frame.empty:
        raise DefectoptError("no benchmarked models to choose from; run 'defectopt bench' first")
    ci_low = pd.to_numeric(frame[N.recall_ci_low], errors="coerce")
    cost = pd.to_numeric(frame[col], errors="coerce")
    # tolerate float round-off of stored CIs (0.95 stored as 0.9499999999)
    passes = (ci_low >= min_recall - 1e-9) & cost.notna()
    if not passes.any():
        measured = ci_low.dropna()
        if measured.empty:
            raise DefectoptError("no row has a recall confidence interval; run 'defectopt bench' to measure one")
        best = frame.loc[measured.idxmax()]
        raise DefectoptError(
            f"no model has a recall CI lower bound >= {min_recall:g}; the best is model {int(best['id'])} "
            f"({best['lineage']}, {best['device']}/{best['backend']}) with {float(best[N.recall_ci_low]):.3f}"
        )
    candidates = frame[passes].assign(_cost=cost[passes], _ci=ci_low[passes],
                                      _recall=pd.to_numeric(frame[N.recall], errors="coerce")[passes])
    ordered = candidates.sort_values(["_cost", "_ci", "_recall", "id"], ascending=[True, False, False, True], kind="stable")
    row = ordered.iloc[0].drop(labels=["_cost", "_ci", "_recall"])
    return Choice(row=row, by=col, qualified=int(passes.sum()))
