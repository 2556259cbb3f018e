"""Outcome events: the runner reports each start and outcome to subscribers (logs, metrics, tests)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("taskbridge.events")

Event = dict[str, Any]
Subscriber = Callable[[Event], None]
ExceptionSubscriber = Callable[[BaseException, Event], None]

_subscribers: list[Subscriber] = []
_exception_subscribers: list[ExceptionSubscriber] = []


def subscribe(subscriber: Subscriber) -> Subscriber:
    """Call ``subscriber(event)`` for every event of this process; returns it, so it can decorate."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)
    return subscriber


def unsubscribe(subscriber: Subscriber) -> None:
    if subscriber in _subscribers:
        _subscribers.remove(subscriber)


def has_subscribers() -> bool:
    """Whether anyone listens; lets hot paths skip building events nobody reads."""
    return bool(_subscribers)


def emit(event: Event) -> None:
    """Hand ``event`` to every subscriber; a failing subscriber is logged and never breaks a job."""
    for subscriber in list(_subscribers):
        try:
            subscriber(event)
        except Exception:
            log.exception("event subscriber %r failed", subscriber)


def subscribe_exceptions(subscriber: ExceptionSubscriber) -> ExceptionSubscriber:
    """Call ``subscriber(exc, event)`` with each exception a job raises (error reporting), before its outcome."""
    if subscriber not in _exception_subscribers:
        _exception_subscribers.append(subscriber)
    return subscriber


def unsubscribe_exceptions(subscriber: ExceptionSubscriber) -> None:
    if subscriber in _exception_subscribers:
        _exception_subscribers.remove(subscriber)


def emit_exception(exc: BaseException, event: Event) -> None:
    """Hand a job's exception to the exception subscribers; kept out of ``emit`` so events stay plain JSON."""
    for subscriber in list(_exception_subscribers):
        try:
            subscriber(exc, event)
        except Exception:
            log.exception("exception subscriber %r failed", subscriber)
