"""Schedules: when a periodic job is due, as a cron expression in a time zone or a fixed interval.

A schedule answers two questions about UNIX timestamps: the first run strictly after a moment, and
the last run at or before it. Times are whole seconds at least; nothing here reads the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ..units import Duration, parse_duration

UTC_NAME = "UTC"


@runtime_checkable
class Schedule(Protocol):
    """When a periodic job runs."""

    def next_after(self, moment: float) -> float:
        """The first run strictly after ``moment`` (a UNIX timestamp)."""

    def latest_until(self, moment: float) -> float:
        """The last run at or before ``moment``."""

    def describe(self) -> str:
        """The schedule as a person reads it, for logs and ``taskbridge scheduler``."""


@dataclass(frozen=True)
class Every:
    """Every ``seconds``, counted from the UNIX epoch: ``every("30s")`` runs at :00 and :30 of each
    minute, on every scheduler, whenever it started. Elapsed time, so no time zone applies."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 1):
            raise ValueError(f"every(...) must be at least one second, got {self.seconds!r} seconds")

    def next_after(self, moment: float) -> float:
        return (math.floor(moment / self.seconds) + 1) * self.seconds

    def latest_until(self, moment: float) -> float:
        return math.floor(moment / self.seconds) * self.seconds

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression (minute hour day-of-month month day-of-week), read in the time
    zone ``tz`` (an IANA name such as ``"Europe/Paris"``; UTC when None).

    Across daylight-saving changes it behaves as Debian's cron: a run at a local time that does not
    exist that day (02:30 when clocks jump from 02:00 to 03:00) happens at the first minute after
    the jump, and a local time that occurs twice runs once.
    """

    expression: str
    tz: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or len(self.expression.split()) != 5:
            raise ValueError(
                f"cron expression {self.expression!r} must have five fields: minute hour day-of-month month day-of-week"
            )
        try:
            CronSim(self.expression, datetime.now(self.zone))
        except CronSimError as exc:
            raise ValueError(f"cron expression {self.expression!r} is not valid: {exc}") from None

    @property
    def zone(self) -> timezone | ZoneInfo:
        """The time zone the expression is read in."""
        if self.tz is None or self.tz == UTC_NAME:
            return timezone.utc
        return zone_named(self.tz)

    def next_after(self, moment: float) -> float:
        return next(CronSim(self.expression, datetime.fromtimestamp(moment, self.zone))).timestamp()

    def latest_until(self, moment: float) -> float:
        # Reverse iteration yields times strictly before its start; cron has whole-second resolution.
        start = datetime.fromtimestamp(math.floor(moment), self.zone) + timedelta(seconds=1)
        return next(CronSim(self.expression, start, reverse=True)).timestamp()

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.tz or UTC_NAME})"


def zone_named(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError naming it if this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'") from None


def every(
    interval: Duration | None = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
) -> Every:
    """A fixed interval: ``every("30s")``, ``every(90)`` or ``every(minutes=5)``; at least one second."""
    if interval is not None and any((seconds, minutes, hours, days)):
        raise ValueError("every(...) takes an interval or keywords (minutes=5), not both")
    if interval is not None:
        total = parse_duration(interval, what="every")
    else:
        total = seconds + 60 * minutes + 3600 * hours + 86400 * days
    return Every(float(total))


def cron(expression: str, tz: str | None = None) -> Cron:
    """A cron schedule, e.g. ``cron("0 9 * * mon-fri", tz="Europe/Paris")``; a string given as
    ``schedule=`` means the same, in ``schedule_tz`` (UTC by default)."""
    if tz is not None:
        zone_named(tz)
    return Cron(expression, tz)
