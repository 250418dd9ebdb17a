"""How a quantized child is judged against its parent on val: binary children at the parent's
false-alarm count (their own threshold), not at the parent's threshold."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from defectopt.compress.quantize.common import Parent, fidelity
from defectopt.metrics.task import evaluate_logits


def _scored(z, labels, threshold, task="binary"):
    logits = np.stack([np.zeros_like(z), z], axis=1)
    metrics = evaluate_logits(logits, labels, task, 2, threshold)
    return {"logits": logits, "labels": labels, "recall": metrics["recall"], "metrics": metrics}


def _parent(base, task="binary"):
    art = SimpleNamespace(id=1, threshold=0.6, img_size=32)
    return Parent(artifact=art, model=None, dataset=SimpleNamespace(task=task, num_classes=2), family="cnn", _val=base)


LABELS = np.array([0] * 10 + [1] * 5)
# parent: all 5 val defects above its threshold (score 0.6 <=> z 0.405), one good too
Z = np.array([-3, -2.8, -2.5, -2.2, -2, -1.8, -1.5, -1.2, -1, 2, 1, 1.5, 2, 2.5, 3], dtype=np.float64)


def test_a_shifted_but_equally_ranked_child_keeps_its_recall():
    base = _scored(Z, LABELS, 0.6)
    assert base["recall"] == 1.0 and base["metrics"]["fp"] == 1
    child = _scored(Z - 4.0, LABELS, 0.6)  # INT8-like shift of the scale
    assert child["recall"] == 0.0  # read at the parent's threshold it would look like a total loss
    fid = fidelity(_parent(base), child)
    assert fid["recall_drop"] == 0.0 and fid["val_recall"] == 1.0 and fid["parent_val_recall"] == 1.0
    assert fid["val_recall_at_parent_threshold"] == 0.0
    assert "at most 1 of 10 val good images" in fid["operating_point"]


def test_a_child_that_ranks_defects_below_good_images_is_over_any_budget():
    base = _scored(Z, LABELS, 0.6)
    child = _scored(-Z, LABELS, 0.6)  # flags goods first: at the parent's false alarms it finds nothing
    fid = fidelity(_parent(base), child)
    assert fid["val_recall"] == 0.0 and fid["recall_drop"] == 1.0


def test_a_parent_that_flags_every_good_image_makes_the_check_vacuous():
    flag_all = Z - Z.min() + 1.0  # every val image above the parent's threshold: 10 of 10 goods flagged
    base = _scored(flag_all, LABELS, 0.6)
    assert base["metrics"]["fp"] == 10
    child = _scored(-flag_all, LABELS, 0.6)  # ranks every defect last, yet reads full recall at 10 false alarms
    fid = fidelity(_parent(base), child)
    assert fid["recall_drop"] == 0.0 and fid["operating_point_vacuous"] is True
    assert "operating_point_vacuous" not in fidelity(_parent(_scored(Z, LABELS, 0.6)), child)


def test_multiclass_children_are_read_by_argmax_as_before():
    base = _scored(Z, LABELS, None, task="multiclass")
    child = _scored(Z - 4.0, LABELS, None, task="multiclass")
    fid = fidelity(_parent(base, task="multiclass"), child)
    assert "operating_point" not in fid
    assert fid["recall_drop"] == base["recall"] - child["recall"]


def test_paired_counts_are_images_newly_missed_and_regained_at_the_matched_operating_point():
    base = _scored(Z, LABELS, 0.6)  # at 1 false alarm the parent flags all 5 defects
    swapped = Z.copy()
    swapped[10], swapped[0] = -3.0, 1.0  # one defect falls below every good, one good rises to 1.0
    fid = fidelity(_parent(base), _scored(swapped, LABELS, 0.6))
    # at 1 false alarm the child's cut is its second-highest good (1.0): defect 10 (now -3.0) is newly
    # missed, the other four (1.5 and up) stay flagged
    assert fid["val_new_misses"] == 1 and fid["val_regained"] == 0 and fid["recall_drop"] == pytest.approx(0.2)
    assert fidelity(_parent(base), _scored(Z - 4.0, LABELS, 0.6))["val_new_misses"] == 0


def test_multiclass_paired_counts_do_not_let_a_regained_image_hide_a_new_miss():
    labels = np.array([0, 0, 1, 1, 2, 2])
    parent = np.eye(3)[[0, 0, 1, 1, 2, 0]] * 5.0  # right on 5 of 6 (the last image wrong)
    child = np.eye(3)[[0, 1, 1, 1, 2, 2]] * 5.0  # wrong on image 1, right on the last: same macro recall
    task = lambda z: {"logits": z, "labels": labels, "recall": evaluate_logits(z, labels, "multiclass", 3)["recall"],
                      "metrics": evaluate_logits(z, labels, "multiclass", 3)}
    fid = fidelity(_parent(task(parent), task="multiclass"), task(child))
    assert abs(fid["recall_drop"]) < 1e-12 and fid["val_new_misses"] == 1 and fid["val_regained"] == 1
