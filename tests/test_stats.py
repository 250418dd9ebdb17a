"""McNemar's test against textbook values, and the pairing of stored per-image decisions."""

from __future__ import annotations

import pytest

from defectopt.report.stats import mcnemar, mcnemar_from_extras


def test_chi_square_with_continuity_correction_textbook_value():
    # Wikipedia "McNemar's test" example (Bland 2000 data: b = 121, c = 59):
    # chi2 with Edwards' correction = (|121 - 59| - 1)^2 / 180 = 20.672, p = 5.45e-6
    res = mcnemar(121, 59)
    assert res.method == "chi2-cc"
    assert res.statistic == pytest.approx(61**2 / 180)
    assert res.statistic == pytest.approx(20.672, abs=1e-3)
    assert res.p_value == pytest.approx(5.45e-6, rel=2e-3)


def test_exact_binomial_for_small_discordant_counts():
    # b = 1, c = 9: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024 = 0.021484375
    res = mcnemar(1, 9)
    assert res.method == "exact" and res.p_value == pytest.approx(22 / 1024)
    assert mcnemar(9, 1).p_value == pytest.approx(22 / 1024)  # symmetric
    # b = c: p is capped at 1
    assert mcnemar(3, 3).p_value == 1.0
    assert mcnemar(0, 0).p_value == 1.0
    # b = 0, c = 5: 2 / 32
    assert mcnemar(0, 5).p_value == pytest.approx(0.0625)


def test_exact_and_chi_square_agree_roughly_near_the_switch():
    exact = mcnemar(8, 20, exact=True).p_value
    approx = mcnemar(8, 20, exact=False).p_value
    assert exact == pytest.approx(0.0357, abs=5e-4)  # 2 * P(X <= 8), X ~ Bin(28, 1/2)
    assert approx == pytest.approx(exact, rel=0.25)


def test_pairs_defect_images_only_for_binary_tasks():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    parent = {"decisions": [1, 1, 1, 0, 0, 0, 1, 1], "labels": labels}
    child = {"decisions": [1, 0, 0, 1, 1, 1, 0, 0], "labels": labels}
    res = mcnemar_from_extras(parent, child, "binary")
    # defect images: parent caught 0,1,2; child caught 0,3 -> b = 2 (1, 2), c = 1 (3); good images ignored
    assert (res.b, res.c, res.n) == (2, 1, 4)
    assert res.p_value == pytest.approx(1.0)


def test_multiclass_pairs_correctness_on_every_image():
    labels = [0, 1, 2, 0, 1, 2]
    parent = {"decisions": [0, 1, 2, 0, 1, 0], "labels": labels}
    child = {"decisions": [0, 2, 2, 1, 1, 2], "labels": labels}
    res = mcnemar_from_extras(parent, child, "multiclass")
    assert (res.b, res.c, res.n) == (2, 1, 6)


def test_incomparable_rows_give_no_test():
    a = {"decisions": [1, 0], "labels": [1, 1]}
    assert mcnemar_from_extras({}, a, "binary") is None
    assert mcnemar_from_extras(a, {"decisions": [1, 0, 1], "labels": [1, 1, 0]}, "binary") is None
    assert mcnemar_from_extras({**a, "split_hash": "x"}, {**a, "split_hash": "y"}, "binary") is None
    assert mcnemar_from_extras(a, {"decisions": [1], "labels": [1, 1]}, "binary") is None
