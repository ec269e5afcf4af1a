"""The verdict rules of the seeded experiments (ensembles, transfer): a 95% t interval over seeds, a
threshold it must clear, and one verdict from several sub-checks.

    interval([0.91, 0.92, 0.93])        # {"n": 3, "mean": 0.92, "std": 0.01, "ci95": [low, high]}
    threshold_verdict(low, high, 0.01)  # supported | not supported | inconclusive
    combine_verdicts(["supported", "not supported"])  # mixed
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainlab.report.compare import t_interval


def interval(values: list[float]) -> dict[str, Any]:
    """mean, std and 95% t interval (an interval of zero width when every value is equal)."""
    if len(values) < 2:
        return {"n": len(values), "mean": values[0] if values else math.nan, "std": 0.0, "ci95": None}
    mean, low, high = t_interval(values)
    if math.isnan(low):
        low = high = mean
    return {"n": len(values), "mean": mean, "std": float(np.std(values, ddof=1)), "ci95": [low, high]}


def threshold_verdict(low: float, high: float, threshold: float) -> str:
    """An interval [low, high] against a threshold: supported at or above it, not supported below it,
    inconclusive when it straddles it."""
    return "supported" if low >= threshold else "not supported" if high < threshold else "inconclusive"


def combine_verdicts(verdicts: list[str]) -> str:
    """One verdict from sub-checks': all agree -> theirs; some supported and some not -> mixed;
    otherwise (some inconclusive) -> inconclusive."""
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return "mixed" if "supported" in verdicts and "not supported" in verdicts else "inconclusive"
