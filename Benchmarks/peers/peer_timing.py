"""Timing helpers shared by the peer reference scripts in this folder (pytorch_reference.py,
tinygrad_reference.py), so both report p10/p90 the same way as Opal (linear interpolation)."""

from typing import List


def percentile(sorted_values: List[float], fraction: float) -> float:
    """Linear-interpolated percentile of an already sorted, non-empty list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
