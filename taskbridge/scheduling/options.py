"""The ``schedule=``, ``schedule_tz=`` and ``missed=`` options of ``@job``, parsed and checked once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import JobDefinitionError
from .schedules import Cron, Every, Schedule, cron, zone_named

Missed = Literal["skip", "catch_up_once"]
MISSED_POLICIES: tuple[Missed, ...] = ("skip", "catch_up_once")
SCHEDULED_AT = "scheduled_at"
"""The parameter (and envelope header) through which a run receives its scheduled time."""


@dataclass(frozen=True)
class Periodic:
    """How a periodic job runs: its schedule and what happens to runs missed while no scheduler ran."""

    schedule: Schedule
    missed: Missed = "skip"
    passes_time: bool = False
    """The function declares a ``scheduled_at`` parameter: each run receives its time (ISO 8601, UTC)."""


def parse_periodic(
    job_name: str, func: Callable[..., Any], schedule: Any, schedule_tz: str | None, missed: str
) -> Periodic | None:
    """The job's :class:`Periodic`, or None when it has no schedule; :class:`JobDefinitionError`
    naming the job and the option when one is wrong."""
    if missed not in MISSED_POLICIES:
        raise JobDefinitionError(f"job {job_name!r}: option missed= must be 'skip' or 'catch_up_once', got {missed!r}")
    if schedule is None:
        for option, value, default in (("schedule_tz", schedule_tz, None), ("missed", missed, "skip")):
            if value != default:
                raise JobDefinitionError(f"job {job_name!r}: option {option}= needs schedule= as well")
        return None
    parsed = _schedule(job_name, schedule, schedule_tz)
    parameters = inspect.signature(func).parameters
    passes_time = SCHEDULED_AT in parameters
    try:
        inspect.signature(func).bind(**({SCHEDULED_AT: ""} if passes_time else {}))
    except TypeError:
        raise JobDefinitionError(
            f"job {job_name!r}: option schedule= needs a function callable without arguments (each run is "
            f"enqueued with none; a '{SCHEDULED_AT}' parameter receives the run's time), got "
            f"{func.__qualname__}{inspect.signature(func)}"
        ) from None
    return Periodic(parsed, missed, passes_time)  # type: ignore[arg-type]


def _schedule(job_name: str, schedule: Any, schedule_tz: str | None) -> Schedule:
    if schedule_tz is not None:
        if not isinstance(schedule_tz, str):
            raise JobDefinitionError(
                f"job {job_name!r}: option schedule_tz= must be a time zone name, got {schedule_tz!r}"
            )
        try:
            zone_named(schedule_tz)
        except ValueError as exc:
            raise JobDefinitionError(f"job {job_name!r}: option schedule_tz=: {exc}") from None
    if isinstance(schedule, str):
        try:
            return cron(schedule, schedule_tz)
        except ValueError as exc:
            raise JobDefinitionError(f"job {job_name!r}: option schedule=: {exc}") from None
    if isinstance(schedule, Cron):
        if schedule_tz is not None and schedule.tz is not None and schedule.tz != schedule_tz:
            raise JobDefinitionError(
                f"job {job_name!r}: option schedule_tz={schedule_tz!r} contradicts the schedule's tz={schedule.tz!r}"
            )
        return Cron(schedule.expression, schedule.tz or schedule_tz)
    if isinstance(schedule, Every):
        if schedule_tz is not None:
            raise JobDefinitionError(
                f"job {job_name!r}: option schedule_tz= applies to cron schedules; every(...) counts elapsed time"
            )
        return schedule
    if isinstance(schedule, Schedule):
        return schedule
    raise JobDefinitionError(
        f"job {job_name!r}: option schedule= must be a cron string like '*/5 * * * *', every('30s') or "
        f"cron(...), got {schedule!r}"
    )
