"""Periodic jobs that scheduler processes import in tests/scheduling/test_scheduling_processes.py."""

from __future__ import annotations

from taskbridge import events, job
from taskbridge.testing.jobs import record, tick  # noqa: F401 - the every-second job, fired here too


@events.subscribe
def _record_fired(event: events.Event) -> None:
    if isinstance(event, events.ScheduledEvent) and event.job.startswith(__name__):
        record("outcome:scheduled", job=event.job, id=event.id, scheduled_at=event.scheduled_at)


@job(name="scheduling_jobs.new_year", schedule="0 0 1 1 *", schedule_tz="Europe/Paris")
def new_year(scheduled_at: str) -> None:
    """Skips the runs it missed (the default)."""
    record("ran", job="new_year", scheduled_at=scheduled_at)


@job(name="scheduling_jobs.new_year_catch_up", schedule="0 0 1 1 *", schedule_tz="Europe/Paris", missed="catch_up_once")
def new_year_catch_up(scheduled_at: str) -> None:
    """Catches up once on the runs it missed."""
    record("ran", job="new_year_catch_up", scheduled_at=scheduled_at)
