"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(count: int, seconds: float) -> float:
    """Jobs per second."""
    return count / seconds if seconds > 0 else float("inf")


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` took."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
