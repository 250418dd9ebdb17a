"""The early-stopping rule of `search` (Optuna's pruners are single-objective only:
`Trial.report` raises in a multi-objective study, so the rule is ours).

A student's training is stopped after epoch e when its val recall is below the recall floor by
more than any finished training curve of this search ever gained after epoch e. "Gained" is the
best val recall from epoch e on minus the recall at epoch e: if no curve seen so far recovered
that much, this one is not expected to reach the floor either. Until `min_curves` curves reach
epoch e the rule stops nothing there, and it never stops a run at its last epoch (there is
nothing left to save). Why `min_curves` defaults to 2: on NEU-DET, with one finished curve (a
pretrained Lite0 that gained 0.011 after its first epoch) the rule stopped a Lite0 run at 0.950
after epoch 1 against a floor of 0.98, although the same recipe reached 0.989 in the study — one
curve is one sample of "how much a run can still gain", and the maximum of one sample is low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Curve:
    """Val recall per epoch (index 0 = after epoch 1) of a finished training run."""

    source: str  # e.g. "trial 3 (model 12)"
    recalls: tuple[float, ...]

    def gain_after(self, epoch: int) -> float | None:
        """Best later recall minus the recall after `epoch` (1-based); None if the run was shorter."""
        if epoch < 1 or epoch > len(self.recalls):
            return None
        at = self.recalls[epoch - 1]
        return max(self.recalls[epoch - 1:]) - at


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str = ""


MIN_CURVES = 2


def decide(recall: float, epoch: int, total_epochs: int, floor: float, curves: Sequence[Curve],
           min_curves: int = MIN_CURVES) -> StopDecision:
    """Stop a run whose val recall after `epoch` is `recall`?"""
    if epoch >= total_epochs:
        return StopDecision(False)
    gains = [(c.gain_after(epoch), c.source) for c in curves]
    gains = [(g, src) for g, src in gains if g is not None]
    if not gains or len(gains) < min_curves:
        return StopDecision(False)
    best_gain, source = max(gains, key=lambda t: t[0])
    shortfall = floor - recall
    if shortfall > best_gain:
        return StopDecision(True, f"val recall {recall:.3f} after epoch {epoch}/{total_epochs} is {shortfall:.3f} below "
                                  f"the floor {floor:g}; the most any finished run recovered after epoch {epoch} "
                                  f"was {best_gain:.3f} ({source}; {len(gains)} runs known)")
    return StopDecision(False)
