"""Percentiles."""

from __future__ import annotations


def pct(values: list[float], q: float) -> float:
    """Percentile q (0..100), interpolating between closest ranks (numpy's default); NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def ms(value: float) -> str:
    """Milliseconds: two decimals below 100, none above ("-" for NaN)."""
    if value != value:  # NaN
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
