"""McNemar's paired test: is a child's recall different from its parent's on the same images?

Both models classified the same frozen test images, so the comparison is paired. Only the
discordant images carry information: b = the parent got it right and the child did not,
c = the child got it right and the parent did not. Under "no difference" b ~ Binomial(b+c, 1/2).

- b + c < 25 (`EXACT_BELOW`): the exact two-sided binomial test,
  p = min(1, 2 * P[X <= min(b, c)]), X ~ Binomial(b + c, 1/2).
- otherwise: the chi-square statistic with Edwards' continuity correction,
  chi2 = (|b - c| - 1)^2 / (b + c), p = P[chi2_1 >= chi2] = erfc(sqrt(chi2 / 2)).

What "right" means comes from the per-image decisions bench stores on each `recall` row
(`extra["decisions"]`, `extra["labels"]`, in manifest order of the test split):
binary tasks compare the defect images only (recall is about them): right = flagged defect;
multi-class tasks compare every image: right = predicted class == label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EXACT_BELOW = 25


@dataclass(frozen=True)
class McNemar:
    b: int  # parent right, child wrong
    c: int  # parent wrong, child right
    n: int  # paired images compared
    statistic: float | None  # chi-square value (None for the exact test)
    p_value: float
    method: str  # "exact" | "chi2-cc"


def mcnemar(b: int, c: int, *, n: int | None = None, exact: bool | None = None) -> McNemar:
    """McNemar's test on the discordant counts b and c (exact binomial when b + c is small)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    total = b + c
    use_exact = total < EXACT_BELOW if exact is None else exact
    if total == 0:
        return McNemar(b, c, n if n is not None else 0, None if use_exact else 0.0, 1.0, "exact" if use_exact else "chi2-cc")
    if use_exact:
        k = min(b, c)
        tail = sum(math.comb(total, i) for i in range(k + 1)) / 2.0**total
        return McNemar(b, c, n if n is not None else total, None, min(1.0, 2.0 * tail), "exact")
    chi2 = max(abs(b - c) - 1, 0) ** 2 / total
    return McNemar(b, c, n if n is not None else total, chi2, math.erfc(math.sqrt(chi2 / 2.0)), "chi2-cc")


def paired_outcomes(extra: dict[str, Any], task: str | None = None) -> tuple[list[int], list[int]] | None:
    """(per-image 'right' flags, labels) from a recall row's extra, or None when not stored."""
    decisions, labels = extra.get("decisions"), extra.get("labels")
    if not isinstance(decisions, list) or not isinstance(labels, list) or len(decisions) != len(labels):
        return None
    labels = [int(v) for v in labels]
    decisions = [int(v) for v in decisions]
    binary = (task == "binary") if task else set(labels) <= {0, 1} and set(decisions) <= {0, 1}
    if binary:
        return [int(d == 1) for d in decisions], labels
    return [int(d == y) for d, y in zip(decisions, labels)], labels


def mcnemar_from_extras(parent_extra: dict[str, Any], child_extra: dict[str, Any], task: str | None = None) -> McNemar | None:
    """McNemar of child vs parent from two recall rows' stored decisions; None when the rows
    do not hold comparable decisions (missing, or a different set of test images)."""
    if parent_extra.get("split_hash") and child_extra.get("split_hash") and parent_extra["split_hash"] != child_extra["split_hash"]:
        return None
    par, chi = paired_outcomes(parent_extra, task), paired_outcomes(child_extra, task)
    if par is None or chi is None:
        return None
    (p_right, p_labels), (c_right, c_labels) = par, chi
    if p_labels != c_labels:
        return None
    binary = (task == "binary") if task else set(p_labels) <= {0, 1}
    pairs = [(pr, cr) for pr, cr, y in zip(p_right, c_right, p_labels) if (y == 1 or not binary)]
    b = sum(1 for pr, cr in pairs if pr and not cr)
    c = sum(1 for pr, cr in pairs if cr and not pr)
    return mcnemar(b, c, n=len(pairs))
