"""Percentiles and sample sets."""

from __future__ import annotations

from dataclasses import dataclass, field


def pct(values: list[float], q: float) -> float:
    """Percentile q (0..100), interpolating between closest ranks (numpy's default); NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


@dataclass
class Samples:
    values_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return pct(self.values_ms, q)

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def n(self) -> int:
        return len(self.values_ms)


def fmt(value: float) -> str:
    """Milliseconds: two decimals below 100, none above."""
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"
