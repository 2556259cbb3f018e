"""Firing one run of a periodic job: an ordinary enqueue that carries the run's scheduled time."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .. import events
from ..envelope import Envelope
from .options import SCHEDULED_AT

SCHEDULED_HEADER = SCHEDULED_AT
"""Envelope header holding the run's scheduled time, ISO 8601 in UTC."""


def iso(moment: float) -> str:
    """A UNIX timestamp as ISO 8601 in UTC, the form a run's scheduled time travels in."""
    return datetime.fromtimestamp(moment, timezone.utc).isoformat()


def fire(handle: Any, scheduled: float) -> Envelope | None:
    """Enqueue one run of the periodic job ``handle`` scheduled at ``scheduled``; None when its
    ``unique`` twin is still pending. Emits a ``scheduled`` event naming the run's envelope id."""
    from ..producer import Producer

    periodic = handle.spec.periodic
    when = iso(scheduled)
    publisher = Producer(handle.spec)
    envelope = publisher.build((), {SCHEDULED_AT: when} if periodic is not None and periodic.passes_time else {})
    if envelope is None:
        return None
    envelope = envelope.with_changes(headers={**envelope.headers, SCHEDULED_HEADER: when})
    publisher.send([envelope])
    events.emit(events.ScheduledEvent(job=handle.name, id=envelope.id, queue=envelope.queue, scheduled_at=when))
    return envelope
