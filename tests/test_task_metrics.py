"""Task metrics against hand-computed confusion matrices; threshold choice; seeded bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from defectopt.metrics import task as tm
from defectopt.metrics import resolve
from defectopt.runtime.preprocess import binary_decisions


def _logits_from_scores(scores):
    """Two-class logits whose softmax defect probability is exactly `scores`."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)


def test_binary_metrics_match_hand_computed_confusion_matrix():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    m = tm.binary_metrics(np.array(y_true), np.array(y_pred))
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)
    assert m["fnr"] == pytest.approx(0.25)
    assert m["accuracy"] == pytest.approx(8 / 10)


def test_multiclass_metrics_match_hand_computed_confusion_matrix():
    # confusion matrix (rows = truth): [[3,1,0],[0,2,2],[0,0,2]]
    y_true = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    m = tm.multiclass_metrics(np.array(y_true), np.array(y_pred), 3)
    recalls = [3 / 4, 2 / 4, 2 / 2]
    precisions = [3 / 3, 2 / 3, 2 / 4]
    f1s = [2 * p * r / (p + r) for p, r in zip(precisions, recalls)]
    assert [m[f"recall_class_{c}"] for c in range(3)] == pytest.approx(recalls)
    assert m["macro_recall"] == pytest.approx(np.mean(recalls))
    assert m["min_class_recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["accuracy"] == pytest.approx(7 / 10)


def test_auroc_hand_computed_and_with_ties():
    assert tm.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert tm.auroc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert tm.auroc(np.array([0.2, 0.3]), np.array([1, 1])) is None
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 2)  # rounding makes ties
    assert tm.auroc(scores, labels) == pytest.approx(sk.roc_auc_score(labels, scores))


@pytest.mark.parametrize("target", [0.8, 0.9, 0.99, 1.0])
def test_threshold_is_the_highest_reaching_target_recall_on_val(target):
    rng = np.random.default_rng(0)
    labels = np.array([1] * 57 + [0] * 40)
    scores = np.where(labels == 1, rng.beta(5, 2, len(labels)), rng.beta(2, 5, len(labels)))
    logits = _logits_from_scores(scores)
    choice = tm.choose_threshold(logits, labels, target)
    flagged = binary_decisions(logits, choice.threshold)
    recall = flagged[labels == 1].mean()
    assert recall >= target and choice.val_recall == pytest.approx(recall)
    # any higher threshold misses the target: it is the highest one that reaches it
    higher = binary_decisions(logits, np.nextafter(choice.threshold, 2.0))
    assert higher[labels == 1].mean() < target


def test_threshold_without_val_defects_falls_back_to_argmax():
    choice = tm.choose_threshold(_logits_from_scores([0.2, 0.7]), np.array([0, 0]), 0.99)
    assert choice.threshold is None and choice.val_defects == 0


def test_bootstrap_ci_is_seeded_and_contains_point_estimate():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 120)
    preds = np.where(rng.random(120) < 0.85, labels, 1 - labels)
    point = tm.binary_metrics(labels, preds)["recall"]
    a = tm.bootstrap_recall_ci(labels, preds, "binary", n_boot=500, seed=7)
    b = tm.bootstrap_recall_ci(labels, preds, "binary", n_boot=500, seed=7)
    c = tm.bootstrap_recall_ci(labels, preds, "binary", n_boot=500, seed=8)
    assert a == b and a != c
    assert a[0] <= point <= a[1] and a[0] < a[1]
    # multi-class: macro recall
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    lo, hi = tm.bootstrap_recall_ci(y, p, "multiclass", 4, n_boot=300, seed=0)
    assert lo <= tm.multiclass_metrics(y, p, 4)["macro_recall"] <= hi
    assert tm.bootstrap_recall_ci(np.zeros(5), np.zeros(5), "binary") is None


def test_task_report_binary_threshold_argmax_types_and_ci():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.4, 0.3, 0.45, 0.2, 0.1, 0.05])
    types = ["scratch", "scratch", "spot", "spot", "good", "good", "good", "good"]
    logits = _logits_from_scores(scores)
    thr = tm.ThresholdChoice(0.3, 1.0, 0.99, 4)
    rep = tm.task_report(logits, labels, task="binary", num_classes=2, test_types=types, threshold=thr, n_boot=200)
    v = rep.values
    # at 0.3: all 4 defects flagged, one good (0.45) flagged
    assert (v["tp"], v["fn"], v["fp"], v["tn"]) == (4, 0, 1, 3)
    assert v["recall"] == 1.0 and v["precision"] == pytest.approx(0.8)
    # argmax (score >= 0.5): 2 of 4 defects
    assert v["recall_argmax"] == pytest.approx(0.5) and v["fnr_argmax"] == pytest.approx(0.5)
    assert v["recall_type:scratch"] == 1.0 and v["recall_type:spot"] == 1.0
    assert rep.extra["recall_type:spot"] == {"type": "spot", "n": 2}
    assert v["auroc"] == pytest.approx(14 / 16)  # 0.4 and 0.3 rank below the good 0.45
    assert v["recall_ci_low"] <= v["recall"] <= v["recall_ci_high"]
    assert v["fnr_ci_low"] == pytest.approx(1 - v["recall_ci_high"])
    assert rep.extra["recall"]["threshold"] == 0.3
    for name in v:
        resolve(name)  # every row name is a defined metric


def test_task_report_multiclass_per_class_rows():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    rep = tm.task_report(logits, labels, task="multiclass", num_classes=3, class_names=["Cr", "In", "Pa"], n_boot=100)
    v = rep.values
    assert v["recall_type:Cr"] == 0.5 and v["recall_type:In"] == 1.0 and v["recall_type:Pa"] == 0.5
    assert v["macro_recall"] == pytest.approx(2 / 3) == v["recall"]
    assert v["min_class_recall"] == 0.5
    assert "tp" not in v
    for name in v:
        resolve(name)


def test_clopper_pearson_exact_interval_does_not_collapse_at_k_equals_n():
    # k = n: the lower end has the closed form (alpha/2)^(1/n); 32/32 -> 0.8911, not [1, 1]
    lo, hi = tm.clopper_pearson(32, 32)
    assert lo == pytest.approx(0.025 ** (1 / 32), abs=1e-9) and hi == 1.0
    lo, hi = tm.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    # textbook value: 7/20 -> [0.1539, 0.5922]
    lo, hi = tm.clopper_pearson(7, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.1539, 0.5922)
    assert tm.clopper_pearson(0, 0) is None


def test_binary_report_uses_the_exact_interval_for_recall_and_precision():
    labels = np.array([1] * 32 + [0] * 48)
    logits = np.zeros((80, 2))
    logits[:, 1] = np.where(labels == 1, 3.0, -3.0)
    logits[-4:, 1] = 3.0  # 4 false positives: precision 32/36
    v = tm.task_report(logits, labels, task="binary", num_classes=2).values
    assert v["recall"] == 1.0 and v["recall_ci_low"] == pytest.approx(0.025 ** (1 / 32), abs=1e-9)
    assert v["fnr_ci_high"] == pytest.approx(1 - v["recall_ci_low"])
    assert v["precision_ci_low"] < 32 / 36 < v["precision_ci_high"]


def test_threshold_choice_says_when_val_cannot_resolve_the_target():
    """6 val defects: one miss is 0.167 of recall, so target 0.99 cannot allow any miss; 200 can."""
    small = tm.choose_threshold(_logits_from_scores(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1])),
                                np.array([1, 1, 1, 1, 1, 1, 0]), 0.99)
    assert small.unresolved and small.val_recall == 1.0 and small.val_recall_resolution == pytest.approx(1 / 6)
    assert "6 defects" in small.note() and "catches every val defect" in small.note()
    rng = np.random.default_rng(0)
    big = tm.choose_threshold(_logits_from_scores(rng.random(201)), np.array([1] * 200 + [0]), 0.99)
    assert not big.unresolved and big.note() is None and big.val_recall == pytest.approx(0.99)
    rep = tm.task_report(_logits_from_scores(np.array([0.9, 0.2])), np.array([1, 0]), task="binary", num_classes=2,
                         threshold=small)
    assert rep.extra["recall"]["val_unresolved"] is True and rep.extra["recall"]["val_recall_resolution"] == pytest.approx(1 / 6)


def _binary_logits(z) -> np.ndarray:
    """Logits whose defect score is sigmoid(z)."""
    z = np.asarray(z, dtype=np.float64)
    return np.stack([np.zeros_like(z), z], axis=1)


def test_recall_at_false_alarms_reads_models_at_the_same_operating_point():
    labels = np.array([0] * 6 + [1] * 4)
    z = np.array([-3, -2, -1, 0.5, 2.0, 2.0, 1.0, 1.5, 2.5, 3.0])  # two goods tie at 2.0
    # at most 1 false alarm: the cutoff is the second-highest good score (2.0, tied), ties unflagged
    assert tm.recall_at_false_alarms(_binary_logits(z), labels, 1) == 0.5
    assert tm.recall_at_false_alarms(_binary_logits(z), labels, 2) == 1.0  # above 0.5: all four defects
    assert tm.recall_at_false_alarms(_binary_logits(z), labels, 0) == 0.5
    assert tm.recall_at_false_alarms(_binary_logits(z), labels, 6) == 1.0  # every good may be flagged
    # a monotonic shift (what INT8 does to the scale) changes no operating point; a reversal does
    assert tm.recall_at_false_alarms(_binary_logits(z - 5), labels, 2) == 1.0
    assert tm.recall_at_false_alarms(_binary_logits(-z), labels, 2) == 0.0
    assert tm.recall_at_false_alarms(_binary_logits(z[:6]), labels[:6], 1) is None


def test_upper_rate_bound_is_the_exact_one_sided_clopper_pearson_bound():
    # with no event the one-sided bound has a closed form: 1 - (1 - confidence) ** (1 / n)
    assert tm.upper_rate_bound(0, 360, 0.9) == pytest.approx(1 - 0.1 ** (1 / 360), rel=1e-6)
    # 360 val images, 1-pt budget: no new miss passes (0.0064), one does not (0.0108)
    assert tm.upper_rate_bound(0, 360) < 0.01 < tm.upper_rate_bound(1, 360)
    assert tm.upper_rate_bound(3, 1000) < 0.01 and tm.upper_rate_bound(0, 0) is None


def test_recall_at_false_alarms_is_the_defect_share_of_the_flags_at_false_alarms():
    z = np.array([0.1, 0.2, 0.3, 0.9, 0.5, 0.05, 0.95, 0.4])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    flags = tm.flags_at_false_alarms(_binary_logits(z), labels, 1)
    assert flags.tolist() == [False, False, False, True, True, False, True, True]  # cut at the 2nd good (0.3)
    assert tm.recall_at_false_alarms(_binary_logits(z), labels, 1) == 0.75
