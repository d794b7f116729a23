"""Percentiles and the small summaries the load generator reports (raw numbers, no smoothing)."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 95, 99)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise_ns(samples_ns: Sequence[int]) -> dict[str, float | int | None]:
    """Count, p50/p95/p99, max and mean of nanosecond samples, in milliseconds.

    An empty input gives ``count`` 0 and None everywhere else.
    """
    if not samples_ns:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(samples_ns)
    summary: dict[str, float | int | None] = {"count": len(ordered)}
    for pct in PERCENTILES:
        summary[f"p{pct}"] = round(percentile(ordered, pct) / 1e6, 3)
    summary["max"] = round(ordered[-1] / 1e6, 3)
    summary["mean"] = round(sum(ordered) / len(ordered) / 1e6, 3)
    return summary
