"""Paired statistics: one rule for every comparison of two models on the same items (held-out blocks, eval
questions), used by the findings' verdicts and the CI eval gate alike.

    delta, stderr = paired_difference([b - a for a, b in zip(losses_a, losses_b)])
    direction(delta, stderr)        # True / False beyond two standard errors, None (not separable) within
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def paired_difference(diffs: Sequence[float]) -> tuple[float, float]:
    """Mean of per-item differences and its standard error (sample sd / sqrt(n)); the error is 0 for one item."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no paired items to compare")
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / max(1, n - 1)
    return mean, math.sqrt(variance / n)


def direction(delta: float, stderr: float, z: float = 2.0) -> bool | None:
    """True / False when `delta` is positive / negative by more than z standard errors, else None."""
    if abs(delta) <= z * stderr:
        return None
    return delta > 0
