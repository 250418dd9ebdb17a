"""Task metrics from logits and labels, written once for every backend and for training.

Binary tasks (MVTec, DAGM, synthetic): class 1 is "defect"; the defect score is the softmax
probability of class 1 and an image is flagged when score >= threshold (threshold None means
argmax). Multi-class (NEU): every class is a defect type; recall means macro recall.

bench's recall-critical operating point: `choose_threshold` picks on the val split the highest
threshold that reaches the target recall; `task_report` applies it to the test split and
reports every metric at that threshold and at argmax, with a 95% CI of recall: exact binomial
(Clopper-Pearson) for binary recall/FNR/precision, which stays informative at 32/32 where a
bootstrap collapses to [1, 1]; a seeded bootstrap for macro recall (not one binomial).
Per-type recall becomes rows named `recall_type:<type>` (see defectopt.metrics.PATTERNS).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from defectopt.errors import DefectoptError
from defectopt.metrics import RECALL_TYPE_PREFIX
from defectopt.runtime.preprocess import binary_decisions, defect_scores


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Confusion counts and metrics with 'defect' (1) as the positive class."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    tp = int(((y_true == 1) & (y_pred == 1)).sum())
    fn = int(((y_true == 1) & (y_pred == 0)).sum())
    fp = int(((y_true == 0) & (y_pred == 1)).sum())
    tn = int(((y_true == 0) & (y_pred == 0)).sum())
    recall = _safe_div(tp, tp + fn)
    precision = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {
        "recall": recall, "precision": precision, "f1": f1, "fnr": 1.0 - recall if tp + fn else 0.0,
        "accuracy": _safe_div(tp + tn, len(y_true)), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
    }


def multiclass_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Per-class recall/F1, their macro means, the minimum class recall."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    recalls, f1s = [], []
    present = [c for c in range(num_classes) if cm[c].sum() > 0]
    out: dict[str, float] = {}
    for c in range(num_classes):
        tp = cm[c, c]
        rec = _safe_div(tp, cm[c].sum())
        prec = _safe_div(tp, cm[:, c].sum())
        f1 = _safe_div(2 * prec * rec, prec + rec)
        out[f"recall_class_{c}"] = rec
        if c in present:
            recalls.append(rec)
            f1s.append(f1)
    macro_recall = float(np.mean(recalls)) if recalls else 0.0
    out.update({
        "macro_recall": macro_recall, "min_class_recall": float(min(recalls)) if recalls else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0, "accuracy": _safe_div(np.trace(cm), cm.sum()),
        # the headline names every task shares: recall means macro recall for multi-class
        "recall": macro_recall, "f1": float(np.mean(f1s)) if f1s else 0.0, "fnr": 1.0 - macro_recall,
    })
    return out


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, task: str, num_classes: int,
                    threshold: float | None = None) -> dict[str, float]:
    """The headline metrics for one set of predictions (recall, precision/f1, ...)."""
    logits = np.asarray(logits)
    if task == "binary":
        return binary_metrics(labels, binary_decisions(logits, threshold))
    return multiclass_metrics(labels, logits.argmax(axis=1), num_classes)


# --- ranking, operating point, uncertainty ---------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for labels 1 vs 0 (Mann-Whitney U with tied ranks
    averaged); None when the labels hold only one class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n_pos = int((labels == 1).sum())
    n_neg = int((labels != 1).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank (1-based) over each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float | None  # None: no defect on val, decisions fall back to argmax
    val_recall: float | None
    target_recall: float
    val_defects: int

    @property
    def val_recall_resolution(self) -> float | None:
        """How much one missed val defect moves val recall (1 / val defects)."""
        return 1.0 / self.val_defects if self.val_defects else None

    @property
    def unresolved(self) -> bool:
        """True when one val miss is already more than the target allows (1 - target): the
        threshold then has to catch every val defect, and the target is not what was tuned."""
        return self.val_defects > 0 and self.target_recall < 1.0 and 1.0 / self.val_defects > 1.0 - self.target_recall + 1e-12

    def note(self) -> str | None:
        """One line for the user when the val split cannot resolve the target, else None."""
        if not self.unresolved:
            return None
        return (f"val has {self.val_defects} defects: one miss moves recall by {self.val_recall_resolution:.3f}, more than "
                f"target {self.target_recall:g} allows, so the threshold catches every val defect")


def choose_threshold(val_logits: np.ndarray, val_labels: np.ndarray, target_recall: float = 0.99) -> ThresholdChoice:
    """The highest defect-score threshold whose recall on val reaches `target_recall`.

    Recall at threshold t is #(defect scores >= t) / #defects, so the highest t reaching the
    target is the k-th highest defect score with k = ceil(target x #defects): every threshold
    above it misses one defect too many. Ties are harmless (>= keeps all equal scores).
    """
    if not 0.0 < target_recall <= 1.0:
        raise DefectoptError(f"--target-recall must be in (0, 1], got {target_recall}")
    labels = np.asarray(val_labels).astype(np.int64)
    pos_scores = np.sort(defect_scores(val_logits)[labels == 1])[::-1]
    n = len(pos_scores)
    if n == 0:
        return ThresholdChoice(None, None, target_recall, 0)
    k = max(1, math.ceil(target_recall * n - 1e-9))
    threshold = float(pos_scores[k - 1])
    val_recall = float((pos_scores >= threshold).sum() / n)
    return ThresholdChoice(threshold, val_recall, target_recall, n)


def flags_at_false_alarms(logits: np.ndarray, labels: np.ndarray, max_false_alarms: int) -> np.ndarray:
    """Binary: which images the rule "flag above the (k+1)-th highest good score" flags, k =
    `max_false_alarms` (every image when k reaches the number of good images).

    It is the threshold with at most k false alarms that flags the most defects; ties at that
    score stay unflagged. Applied to two models, it compares them at the same operating point when
    their scores are on different scales (INT8 shifts them).
    """
    labels = np.asarray(labels).astype(np.int64)
    scores = defect_scores(logits)
    neg = np.sort(scores[labels != 1])[::-1]
    if max_false_alarms >= len(neg):
        return np.ones(len(scores), dtype=bool)
    return scores > neg[max(0, int(max_false_alarms))]


def recall_at_false_alarms(logits: np.ndarray, labels: np.ndarray, max_false_alarms: int) -> float | None:
    """Binary: the highest defect recall any threshold reaches while flagging at most
    `max_false_alarms` good images (None when there is no defect); see `flags_at_false_alarms`."""
    labels = np.asarray(labels).astype(np.int64)
    if not (labels == 1).any():
        return None
    return float(flags_at_false_alarms(logits, labels, max_false_alarms)[labels == 1].mean())


def _recall_of_resamples(labels: np.ndarray, correct: np.ndarray, idx: np.ndarray, task: str, num_classes: int) -> np.ndarray:
    """Recall (binary) or macro recall (multi-class) of each bootstrap resample (rows of idx)."""
    if task == "binary":
        pos = (labels == 1)[idx]
        hit = (correct & (labels == 1))[idx]
        n_pos = pos.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_pos > 0, hit.sum(axis=1) / np.maximum(n_pos, 1), np.nan)
    per_class = []
    for c in range(num_classes):
        in_c = (labels == c)[idx]
        n_c = in_c.sum(axis=1)
        hit_c = (correct & (labels == c))[idx].sum(axis=1)
        per_class.append(np.where(n_c > 0, hit_c / np.maximum(n_c, 1), np.nan))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample missing every class is nan
        return np.nanmean(np.stack(per_class, axis=1), axis=1)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact binomial CI of a proportion k/n: the p where P(X >= k) and P(X <= k) reach alpha/2."""
    if n <= 0:
        return None
    alpha = (1.0 - level) / 2.0

    def cdf(x: int, p: float) -> float:  # P(X <= x), in logs so that large n does not overflow
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 1.0 if x >= n else 0.0
        lp, lq = math.log(p), math.log1p(-p)
        terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
                 for i in range(x + 1)]
        top = max(terms)
        return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))

    def solve(f, target: float) -> float:  # f decreasing in p on [0, 1]: bisection
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
        return (lo + hi) / 2

    high = 1.0 if k == n else solve(lambda p: cdf(k, p), alpha)
    # P(X >= k | p) = P(n - X <= n - k | 1 - p): the lower end is one minus the upper end of the complement
    low = 0.0 if k == 0 else 1.0 - solve(lambda q: cdf(n - k, q), alpha)
    return float(low), float(high)


def recall_resolution(labels: np.ndarray, task: str, num_classes: int = 2) -> float | None:
    """The largest change of (macro) recall that one missed image causes on this split: 1 / #defects
    (binary) or 1 / (classes x smallest class count) (multi-class). A recall budget below it cannot be
    resolved on the split: one extra miss already exceeds it. None when there is nothing to recall."""
    labels = np.asarray(labels).astype(np.int64)
    if task == "binary":
        n = int((labels == 1).sum())
        return 1.0 / n if n else None
    counts = [int((labels == c).sum()) for c in range(num_classes)]
    present = [c for c in counts if c > 0]
    return 1.0 / (len(present) * min(present)) if present else None


def upper_rate_bound(k: int, n: int, confidence: float = 0.9) -> float | None:
    """One-sided exact (Clopper-Pearson) upper bound of a rate seen as k events in n trials: with
    `confidence`, the true rate is at most this. None when n is 0."""
    ci = clopper_pearson(k, n, level=2.0 * confidence - 1.0)
    return None if ci is None else ci[1]


def bootstrap_recall_ci(labels: np.ndarray, predictions: np.ndarray, task: str, num_classes: int = 2, *,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Seeded percentile bootstrap CI of recall (binary: defect recall; multi-class: macro recall).

    Images are resampled with replacement (the test split is the sample); FNR's interval is
    (1 - high, 1 - low). None when there is no defect to recall.
    """
    labels = np.asarray(labels).astype(np.int64)
    predictions = np.asarray(predictions).astype(np.int64)
    if task == "binary" and not (labels == 1).any():
        return None
    if len(labels) == 0 or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    correct = predictions == labels
    values = []
    # chunks keep memory at O(chunk x n) for large test splits
    for start in range(0, n_boot, 256):
        idx = rng.integers(0, len(labels), size=(min(256, n_boot - start), len(labels)))
        values.append(_recall_of_resamples(labels, correct, idx, task, num_classes))
    values = np.concatenate(values)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def recall_per_type(labels: np.ndarray, predictions: np.ndarray, types: list[str], task: str,
                    class_names: list[str] | None = None) -> dict[str, tuple[float, int]]:
    """{defect type: (recall, images)}. Binary: defect images grouped by their manifest
    defect_type (a defect counts as caught when flagged defect); multi-class: one entry per class."""
    labels = np.asarray(labels).astype(np.int64)
    predictions = np.asarray(predictions).astype(np.int64)
    out: dict[str, tuple[float, int]] = {}
    if task == "binary":
        types_arr = np.asarray(types, dtype=object)
        for t in sorted({types[i] for i in np.flatnonzero(labels == 1)}):
            mask = (labels == 1) & (types_arr == t)
            out[str(t)] = (float((predictions[mask] == 1).mean()), int(mask.sum()))
        return out
    names = class_names or [str(c) for c in range(int(labels.max()) + 1)]
    for c, name in enumerate(names):
        mask = labels == c
        if mask.any():
            out[str(name)] = (float((predictions[mask] == c).mean()), int(mask.sum()))
    return out


@dataclass
class TaskReport:
    """Test-split metrics ready to become rows: name -> value, plus per-row extra JSON."""

    values: dict[str, float | None]
    extra: dict[str, dict]
    threshold: ThresholdChoice | None


def task_report(test_logits: np.ndarray, test_labels: np.ndarray, *, task: str, num_classes: int,
                test_types: list[str] | None = None, class_names: list[str] | None = None,
                threshold: ThresholdChoice | None = None, n_boot: int = 1000, seed: int = 0) -> TaskReport:
    """Every task metric of the issue for one backend's test logits.

    Binary: metrics at the val-chosen threshold (`recall`, `precision`, ..., confusion counts,
    per-type recall, bootstrap CI) and at argmax (`*_argmax`), plus AUROC of the defect score.
    Multi-class: argmax decisions; recall = macro recall, min class recall, macro F1, per-class
    recall as `recall_type:<class>`.
    """
    logits = np.asarray(test_logits)
    labels = np.asarray(test_labels).astype(np.int64)
    values: dict[str, float | None] = {}
    extra: dict[str, dict] = {}
    n = int(len(labels))
    if task == "binary":
        thr = threshold.threshold if threshold is not None else None
        decisions = binary_decisions(logits, thr)
        at_thr = binary_metrics(labels, decisions)
        at_argmax = binary_metrics(labels, binary_decisions(logits, None))
        op = {"threshold": thr, "operating_point": "val_target_recall" if thr is not None else "argmax",
              "n_test": n, "test_defects": int((labels == 1).sum())}
        if threshold is not None:
            op.update(target_recall=threshold.target_recall, val_recall=threshold.val_recall,
                      val_defects=threshold.val_defects, val_recall_resolution=threshold.val_recall_resolution,
                      val_unresolved=threshold.unresolved)
        for key in ("recall", "precision", "f1", "fnr", "accuracy", "tp", "fn", "fp", "tn"):
            values[key] = at_thr[key]
            extra[key] = dict(op)
        for key in ("recall", "precision", "f1", "fnr", "accuracy"):
            values[f"{key}_argmax"] = at_argmax[key]
            extra[f"{key}_argmax"] = {"operating_point": "argmax", "n_test": n}
        values["auroc"] = auroc(defect_scores(logits), labels)
        extra["auroc"] = {"n_test": n}
    else:
        decisions = logits.argmax(axis=1)
        mc = multiclass_metrics(labels, decisions, num_classes)
        for key in ("recall", "macro_recall", "min_class_recall", "macro_f1", "f1", "fnr", "accuracy"):
            values[key] = mc[key]
            extra[key] = {"operating_point": "argmax", "n_test": n}
        values["recall_argmax"] = mc["recall"]
        values["f1_argmax"] = mc["f1"]
        values["fnr_argmax"] = mc["fnr"]
        values["accuracy_argmax"] = mc["accuracy"]
        for key in ("recall_argmax", "f1_argmax", "fnr_argmax", "accuracy_argmax"):
            extra[key] = {"operating_point": "argmax", "n_test": n}
    if task == "binary":
        tp, fn, fp = int(values["tp"]), int(values["fn"]), int(values["fp"])
        ci = clopper_pearson(tp, tp + fn)
        ci_info = {"level": 0.95, "method": "Clopper-Pearson exact binomial", "k": tp, "n": tp + fn}
        precision_ci = clopper_pearson(tp, tp + fp)
        if precision_ci is not None:
            values["precision_ci_low"], values["precision_ci_high"] = precision_ci
            for key in ("precision_ci_low", "precision_ci_high"):
                extra[key] = {"level": 0.95, "method": "Clopper-Pearson exact binomial", "k": tp, "n": tp + fp}
    else:
        ci = bootstrap_recall_ci(labels, decisions, task, num_classes, n_boot=n_boot, seed=seed)
        ci_info = {"level": 0.95, "n_boot": n_boot, "seed": seed, "method": "percentile bootstrap over test images"}
    if ci is not None:
        values["recall_ci_low"], values["recall_ci_high"] = ci
        values["fnr_ci_low"], values["fnr_ci_high"] = 1.0 - ci[1], 1.0 - ci[0]
        for key in ("recall_ci_low", "recall_ci_high", "fnr_ci_low", "fnr_ci_high"):
            extra[key] = dict(ci_info)
        extra["recall"] = {**extra["recall"], "ci95": list(ci)}
    # per-image decisions on the test split (manifest order): what report.stats pairs for McNemar
    extra["recall"] = {**extra["recall"], "decisions": [int(d) for d in decisions], "labels": [int(y) for y in labels]}
    for name, (rec, count) in recall_per_type(labels, decisions, list(test_types or [""] * n), task, class_names).items():
        values[f"{RECALL_TYPE_PREFIX}{name}"] = rec
        extra[f"{RECALL_TYPE_PREFIX}{name}"] = {"type": name, "n": count}
    return TaskReport(values, extra, threshold)
