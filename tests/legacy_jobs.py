"""A job that declares its old Celery task and Dramatiq actor names, for the legacy-message tests;
worker processes import it and record what ran and every dead letter."""

from __future__ import annotations

from typing import Any

from taskbridge import Backoff, events, job
from taskbridge.testing.jobs import record

CELERY_NAME = "myapp.tasks.send_report"
DRAMATIQ_NAME = "send_report"


@events.subscribe
def _record_dead(event: events.Event) -> None:
    # The contract's own jobs record their outcomes themselves (taskbridge.testing.jobs).
    if isinstance(event, events.DeadEvent | events.ExpiredEvent | events.DoneEvent) and not str(event.job).startswith(
        "taskbridge."
    ):
        record("outcome:" + event.kind, reason=getattr(event, "reason", None), job=event.job)


@job(name="billing.send_report", aliases=[CELERY_NAME, DRAMATIQ_NAME])
def send_report(user_id: int, day: str = "today", **extra: Any) -> None:
    """Records its arguments and the attempt it ran on."""
    record("ran", job="send_report", user_id=user_id, day=day, extra=extra)


@job(name="billing.always_fails", aliases=["myapp.tasks.always_fails"], retry=Backoff(max_retries=1, base=0.1))
def always_fails(note: str) -> None:
    """Records the size of its argument, then fails; retried once, then dead-lettered."""
    record("attempt", job="always_fails", size=len(note))
    raise OSError("always fails")
