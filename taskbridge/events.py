"""Outcome events, under the name the documentation and existing code use: ``taskbridge.events.subscribe``.

The code lives in :mod:`taskbridge.observability.events`; this module is the same API.
"""

from __future__ import annotations

from .observability.events import (
    DeadEvent,
    DeferredEvent,
    DoneEvent,
    EnqueuedEvent,
    Event,
    ExceptionSubscriber,
    ExpiredEvent,
    MessageEvent,
    OutcomeEvent,
    RaisedEvent,
    RetriedEvent,
    ScheduledEvent,
    SkippedEvent,
    StartedEvent,
    Subscriber,
    WaitedEvent,
    emit,
    emit_exception,
    has_exception_subscribers,
    has_subscribers,
    outcome_event,
    subscribe,
    subscribe_exceptions,
    unsubscribe,
    unsubscribe_exceptions,
)

__all__ = [
    "DeadEvent",
    "DeferredEvent",
    "DoneEvent",
    "EnqueuedEvent",
    "Event",
    "ExceptionSubscriber",
    "ExpiredEvent",
    "MessageEvent",
    "OutcomeEvent",
    "RaisedEvent",
    "RetriedEvent",
    "ScheduledEvent",
    "SkippedEvent",
    "StartedEvent",
    "Subscriber",
    "WaitedEvent",
    "emit",
    "emit_exception",
    "has_exception_subscribers",
    "has_subscribers",
    "outcome_event",
    "subscribe",
    "subscribe_exceptions",
    "unsubscribe",
    "unsubscribe_exceptions",
]
