"""Outcome events: the runner reports each start and outcome to subscribers (logs, metrics, tests)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("taskbridge.events")

Event = dict[str, Any]
Subscriber = Callable[[Event], None]

_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> Subscriber:
    """Call ``subscriber(event)`` for every event of this process; returns it, so it can decorate."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)
    return subscriber


def unsubscribe(subscriber: Subscriber) -> None:
    if subscriber in _subscribers:
        _subscribers.remove(subscriber)


def emit(event: Event) -> None:
    """Hand ``event`` to every subscriber; a failing subscriber is logged and never breaks a job."""
    for subscriber in list(_subscribers):
        try:
            subscriber(event)
        except Exception:
            log.exception("event subscriber %r failed", subscriber)
