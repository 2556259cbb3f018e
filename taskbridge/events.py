"""Outcome events, under the name the documentation and existing code use: ``taskbridge.events.subscribe``.

The code lives in :mod:`taskbridge.observability.events`; this module is the same API.
"""

from __future__ import annotations

from .observability.events import (
    Event,
    ExceptionSubscriber,
    Subscriber,
    emit,
    emit_exception,
    has_subscribers,
    subscribe,
    subscribe_exceptions,
    unsubscribe,
    unsubscribe_exceptions,
)

__all__ = [
    "Event",
    "ExceptionSubscriber",
    "Subscriber",
    "emit",
    "emit_exception",
    "has_subscribers",
    "subscribe",
    "subscribe_exceptions",
    "unsubscribe",
    "unsubscribe_exceptions",
]
