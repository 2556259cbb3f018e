"""Parsing of durations ("30s", "5m") and rates ("70/s", "1000/m")."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")

Duration = float | int | str


def parse_duration(value: Duration, *, what: str = "duration") -> float:
    """Return ``value`` in seconds; accepts numbers and strings like ``"250ms"``, ``"30s"``, ``"2h"``."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected seconds or a string like '30s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"{what}: cannot read {value!r} as a duration; use seconds or '250ms', '30s', '5m', '2h', '1d'"
            )
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    else:
        raise ValueError(f"{what}: expected seconds or a string like '30s', got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"{what}: must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError(f"{what}: must not be negative, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Rate:
    """A rate limit: ``count`` jobs per ``period`` seconds."""

    count: float
    period: float

    def __post_init__(self) -> None:
        for name in ("count", "period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"Rate.{name} must be a positive number, got {value!r}")

    @property
    def interval(self) -> float:
        """Seconds between two admitted jobs at the steady rate."""
        return self.period / self.count

    @property
    def interval_microseconds(self) -> int:
        """:attr:`interval` in whole microseconds, rounded up, as a store spaces slots: rounded
        down (76,923 us for 13/s), ``count + 1`` slots would fit in one period."""
        return max(1, math.ceil(round(self.period * 1_000_000) / self.count - 1e-9))

    def __str__(self) -> str:
        return f"{self.count:g}/{self.period:g}s"


def parse_rate(value: str | Rate, *, what: str = "rate_limit") -> Rate:
    """Read ``"70/s"``, ``"1000/m"``, ``"10/h"`` or ``"5/10s"`` as a :class:`Rate`."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string like '70/s' or '1000/m', got {value!r}")
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"{what}: cannot read {value!r}; use 'N/s', 'N/m', 'N/h' or 'N/10s'")
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _SECONDS[match.group(3)]
    if count <= 0 or period <= 0:
        raise ValueError(f"{what}: {value!r} must allow at least some jobs per period")
    return Rate(count=count, period=period)
