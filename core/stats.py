"""Paired statistics: one rule for every comparison of two models on the same items (held-out blocks, eval
questions), used by the findings' verdicts and the CI eval gate alike.

    delta, stderr = paired_difference([b - a for a, b in zip(losses_a, losses_b)])
    direction(delta, stderr)        # True / False beyond two standard errors, None (not separable) within
    non_inferior(delta, stderr, 0.02)   # True when the drop is under 0.02 even at two standard errors
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


def non_inferior(delta: float, stderr: float, margin: float, z: float = 2.0) -> bool | None:
    """A non-inferiority test of `delta` (candidate - baseline, higher is better): True when the candidate
    falls short by less than `margin` even at z standard errors, False when by more than `margin` beyond them,
    else None. Finding no difference is not evidence of parity; this asks for it."""
    if delta - z * stderr > -margin:
        return True
    if delta + z * stderr < -margin:
        return False
    return None
