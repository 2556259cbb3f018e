"""Outcome events: the runner reports each start and outcome to subscribers (logs, metrics, tests).

Each kind of event is a frozen dataclass; subscribers read its attributes (``event.job``,
``event.reason``) and tell kinds apart by class or by :attr:`Event.kind` (``"done"``, ...).
:meth:`Event.as_dict` gives the plain JSON-able dict events have always been written as, and
``event["job"]`` / ``event.get("reason")`` still read an event the way those dicts were read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..envelope import Envelope
from ..outcomes import Dead, Defer, Done, Expired, Outcome, Reason, Retry, Skip

log = logging.getLogger("taskbridge.events")

_MISSING = object()
_NOT_SENT = frozenset({"id", "attempt", "enqueued_at", "not_before"})
"""What an item read without an envelope (a malformed message) has not got."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What every event carries: its :attr:`kind`, when (epoch seconds) and in which process."""

    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    def as_dict(self) -> dict[str, Any]:
        """The event as a plain JSON-able dict: ``{"event": kind, "time": ..., "pid": ..., ...}``."""
        return {"event": self.kind, **{name: getattr(self, name) for name in _field_names(type(self))}}

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The value :meth:`as_dict` has under ``key``, or ``default``."""
        if key == "event":
            return self.kind
        if key not in _field_names(type(self)):
            return default
        if key in _NOT_SENT and isinstance(self, MessageEvent) and self.id is None:
            return default
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return self.get(str(key), _MISSING) is not _MISSING


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_M = TypeVar("_M", bound="MessageEvent")


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEvent(Event):
    """An event about one message. A dead letter of an item that was no valid envelope has only
    ``job`` and ``queue`` (read from the item where it could be), and ``id`` None."""

    job: str | None
    id: str | None = None
    attempt: int | None = None
    queue: str | None = None
    enqueued_at: float | None = None
    not_before: float | None = None

    @classmethod
    def about(cls: type[_M], envelope: Envelope, **fields: Any) -> _M:
        """The event about ``envelope``, with the fields of its kind."""
        return cls(
            job=envelope.job,
            id=envelope.id,
            attempt=envelope.attempt,
            queue=envelope.queue,
            enqueued_at=envelope.enqueued_at,
            not_before=envelope.not_before,
            **fields,
        )

    def as_dict(self) -> dict[str, Any]:
        data = Event.as_dict(self)
        if self.id is None:
            for name in _NOT_SENT:
                del data[name]
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueuedEvent(Event):
    """A batch was published (``enqueue``, ``enqueue_many``, a chain step), in the publishing process."""

    kind: ClassVar[str] = "enqueued"
    job: str
    queue: str
    count: int
    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledEvent(Event):
    """The scheduler fired one run of a periodic job; ``id`` is the run's envelope."""

    kind: ClassVar[str] = "scheduled"
    job: str
    id: str
    queue: str
    scheduled_at: str
    """ISO 8601, UTC."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartedEvent(MessageEvent):
    """The job function is about to run."""

    kind: ClassVar[str] = "started"


@dataclass(frozen=True, slots=True, kw_only=True)
class RaisedEvent(MessageEvent):
    """The job raised; handed only to exception subscribers, with the exception, before its outcome."""

    kind: ClassVar[str] = "raised"


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitedEvent(MessageEvent):
    """A short rate-limit wait was slept in the worker."""

    kind: ClassVar[str] = "waited"
    reason: Reason
    wait: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DoneEvent(MessageEvent):
    """The job returned."""

    kind: ClassVar[str] = "done"
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RetriedEvent(MessageEvent):
    """The job failed and is republished per its ``retry=Backoff(...)``."""

    kind: ClassVar[str] = "retried"
    duration: float
    delay: float
    error: str
    error_type: str | None
    timed_out: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DeferredEvent(MessageEvent):
    """A rate limit, lock or long delay put the message back, not as an attempt."""

    kind: ClassVar[str] = "deferred"
    delay: float
    reason: Reason | str
    """A :class:`~taskbridge.outcomes.Reason`, or a registered policy's own text (metrics label it ``other``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedEvent(MessageEvent):
    """Not run: its lock was held and it asked to skip, or it was cancelled."""

    kind: ClassVar[str] = "skipped"
    reason: Reason | str
    """A :class:`~taskbridge.outcomes.Reason`, or a registered policy's own text (metrics label it ``other``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiredEvent(MessageEvent):
    """It waited past its ``expires`` and was dropped."""

    kind: ClassVar[str] = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadEvent(MessageEvent):
    """It went to the dead-letter queue (out of retries, malformed, unknown job, bad arguments)."""

    kind: ClassVar[str] = "dead"
    duration: float
    reason: str
    error_type: str | None
    timed_out: bool


OutcomeEvent = DoneEvent | RetriedEvent | DeferredEvent | SkippedEvent | ExpiredEvent | DeadEvent
"""The event reporting an :data:`~taskbridge.outcomes.Outcome`."""


def outcome_event(outcome: Outcome, job: str | None = None, queue: str | None = None) -> OutcomeEvent:
    """The event reporting ``outcome``; ``job`` and ``queue`` name a dead item that had no envelope."""
    envelope = outcome.envelope
    if isinstance(outcome, Done):
        return DoneEvent.about(outcome.envelope, duration=outcome.duration)
    if isinstance(outcome, Defer):
        return DeferredEvent.about(outcome.envelope, delay=outcome.delay, reason=outcome.reason)
    if isinstance(outcome, Retry):
        return RetriedEvent.about(
            outcome.envelope,
            duration=outcome.duration,
            delay=outcome.delay,
            error=outcome.error,
            error_type=outcome.error_type,
            timed_out=outcome.timed_out,
        )
    if isinstance(outcome, Skip):
        return SkippedEvent.about(outcome.envelope, reason=outcome.reason)
    if isinstance(outcome, Expired):
        return ExpiredEvent.about(outcome.envelope)
    assert isinstance(outcome, Dead)
    if envelope is None:
        return DeadEvent(
            job=job,
            queue=queue,
            duration=outcome.duration,
            reason=outcome.reason,
            error_type=outcome.error_type,
            timed_out=outcome.timed_out,
        )
    return DeadEvent.about(
        envelope,
        duration=outcome.duration,
        reason=outcome.reason,
        error_type=outcome.error_type,
        timed_out=outcome.timed_out,
    )


Subscriber = Callable[[Event], None]
ExceptionSubscriber = Callable[[BaseException, RaisedEvent], None]

_subscribers: list[Subscriber] = []
_exception_subscribers: list[ExceptionSubscriber] = []


def subscribe(subscriber: Subscriber) -> Subscriber:
    """Call ``subscriber(event)`` for every event of this process; returns it, so it can decorate."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)
    return subscriber


def unsubscribe(subscriber: Subscriber) -> None:
    """Stop calling ``subscriber``."""
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
    """Stop calling ``subscriber`` with exceptions."""
    if subscriber in _exception_subscribers:
        _exception_subscribers.remove(subscriber)


def has_exception_subscribers() -> bool:
    """Whether anyone listens to exceptions (error reporting)."""
    return bool(_exception_subscribers)


def emit_exception(exc: BaseException, event: RaisedEvent) -> None:
    """Hand a job's exception to the exception subscribers; kept out of ``emit`` so events stay plain data."""
    for subscriber in list(_exception_subscribers):
        try:
            subscriber(exc, event)
        except Exception:
            log.exception("exception subscriber %r failed", subscriber)
