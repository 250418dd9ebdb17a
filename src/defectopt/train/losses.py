"""Training losses: cross-entropy with optional class weights, and knowledge distillation.

KD (Hinton et al. 2015), written out rather than taken from a library so the formula is visible:

    L = (1 - α) · CE(student, labels) + α · T² · KL( softmax(teacher / T) ‖ softmax(student / T) )

The T² factor keeps the soft-target gradients on the same scale as the hard-label ones when T
changes (the softened gradients shrink as 1/T²). α = 0 is plain cross-entropy (the no-KD
baseline, identical recipe); α = 1 ignores the labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (K · n_c), so every class carries the same total weight.

    A class absent from the training labels gets weight 0 (it cannot be learned anyway).
    """
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.double)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor,
                  class_weights: torch.Tensor | None = None) -> torch.Tensor:
    w = class_weights.to(student_logits.device) if class_weights is not None else None
    return F.cross_entropy(student_logits.float(), labels, weight=w)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (sum over classes)."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    p_teacher = log_p_teacher.exp()
    kl = (p_teacher * (log_p_teacher - log_p_student)).sum(dim=1).mean()
    return kl * (t * t)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor, *,
            alpha: float, temperature: float, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """(1-α)·CE + α·T²·KL(teacher ‖ student). Class weights (if any) apply to the CE term only."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if alpha == 0.0 or teacher_logits is None:
        if alpha > 0.0:
            raise ValueError("alpha > 0 needs teacher logits")
        return cross_entropy(student_logits, labels, class_weights)
    soft = kd_kl(student_logits, teacher_logits, temperature)
    if alpha == 1.0:
        return soft
    return (1.0 - alpha) * cross_entropy(student_logits, labels, class_weights) + alpha * soft
