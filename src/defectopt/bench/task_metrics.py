"""Task metrics from logits and labels, written once for every backend and for training.

Binary tasks (MVTec, DAGM, synthetic): class 1 is "defect"; the defect score is the softmax
probability of class 1 and an image is flagged when score >= threshold (threshold None means
argmax). Multi-class (NEU): every class is a defect type; recall means macro recall.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def defect_scores(logits: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64))[:, 1]


def binary_decisions(logits: np.ndarray, threshold: float | None) -> np.ndarray:
    logits = np.asarray(logits)
    if threshold is None:
        return (logits.argmax(axis=1) == 1).astype(np.int64)
    return (defect_scores(logits) >= threshold).astype(np.int64)


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
