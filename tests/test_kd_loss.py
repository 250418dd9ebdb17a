"""The KD loss against values computed by hand, and class-balanced weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from defectopt.train.losses import class_balanced_weights, kd_kl, kd_loss


def _softmax(v, t=1.0):
    e = [math.exp(x / t) for x in v]
    s = sum(e)
    return [x / s for x in e]


S = [[2.0, 0.5, -1.0]]
TCH = [[0.0, 3.0, 1.0]]
Y = [1]


def _hand(alpha: float, temperature: float) -> float:
    ps = _softmax(S[0])
    ce = -math.log(ps[Y[0]])
    pt = _softmax(TCH[0], temperature)
    pst = _softmax(S[0], temperature)
    kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, pst))
    return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize("alpha,temperature", [(0.5, 4.0), (0.3, 2.0), (0.9, 1.0)])
def test_kd_loss_matches_hand_computation(alpha, temperature):
    got = kd_loss(torch.tensor(S), torch.tensor(TCH), torch.tensor(Y), alpha=alpha, temperature=temperature)
    assert got.item() == pytest.approx(_hand(alpha, temperature), rel=1e-5)


def test_soft_term_scales_with_t_squared():
    s, t = torch.tensor(S), torch.tensor(TCH)
    for temperature in (1.0, 2.0, 4.0, 8.0):
        kl_plain = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
        assert kd_kl(s, t, temperature).item() == pytest.approx(temperature**2 * kl_plain.item(), rel=1e-5)


def test_alpha_zero_is_cross_entropy_and_ignores_the_teacher():
    s, y = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 1])
    t1, t2 = torch.randn(5, 4), torch.randn(5, 4) * 10
    ce = F.cross_entropy(s, y)
    assert kd_loss(s, t1, y, alpha=0.0, temperature=4).item() == pytest.approx(ce.item(), rel=1e-6)
    assert kd_loss(s, t2, y, alpha=0.0, temperature=4).item() == pytest.approx(ce.item(), rel=1e-6)
    assert kd_loss(s, None, y, alpha=0.0, temperature=4).item() == pytest.approx(ce.item(), rel=1e-6)


def test_alpha_one_ignores_labels():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    a = kd_loss(s, t, torch.tensor([0, 0, 0, 0, 0, 0]), alpha=1.0, temperature=3)
    b = kd_loss(s, t, torch.tensor([2, 1, 2, 1, 0, 2]), alpha=1.0, temperature=3)
    assert a.item() == pytest.approx(b.item(), rel=1e-7)
    assert a.item() > 0


def test_kd_loss_is_zero_when_student_equals_teacher_and_alpha_one():
    s = torch.randn(4, 5)
    assert kd_loss(s, s.clone(), torch.zeros(4, dtype=torch.long), alpha=1.0, temperature=4).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_flows_to_student_only():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t.detach(), torch.tensor([0, 1, 2]), alpha=0.5, temperature=4).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_class_weights_apply_to_ce_term():
    s, t, y = torch.tensor(S * 2), torch.tensor(TCH * 2), torch.tensor([1, 0])
    w = torch.tensor([3.0, 1.0, 1.0])
    got = kd_loss(s, t, y, alpha=0.5, temperature=4, class_weights=w)
    expect = 0.5 * F.cross_entropy(s, y, weight=w) + 0.5 * kd_kl(s, t, 4)
    assert got.item() == pytest.approx(expect.item(), rel=1e-6)


def test_class_balanced_weights_inverse_frequency():
    labels = torch.tensor([0] * 6 + [1] * 2)
    w = class_balanced_weights(labels, 3)
    # N / (K_present * n_c): 8 / (2*6), 8 / (2*2); the absent class gets 0
    assert w.tolist() == pytest.approx([8 / 12, 2.0, 0.0])
    assert (w[labels].sum()).item() == pytest.approx(8.0)


def test_bad_alpha_and_temperature_are_refused():
    s = torch.randn(2, 2)
    with pytest.raises(ValueError):
        kd_loss(s, s, torch.tensor([0, 1]), alpha=1.5, temperature=4)
    with pytest.raises(ValueError):
        kd_loss(s, s, torch.tensor([0, 1]), alpha=0.5, temperature=0)
