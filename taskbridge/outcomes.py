"""Outcomes: what the runner decided for one message, carried out the same way on every engine."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .envelope import Envelope

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:

    class StrEnum(str, Enum):
        """:class:`enum.StrEnum` of Python 3.11: members are their values, as plain strings."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, format_spec: str) -> str:
            return str(self.value).__format__(format_spec)


class Reason(StrEnum):
    """Why a message was deferred or skipped instead of run.

    Each member is its string (``Reason.RATE_LIMIT == "rate limit"``), the text events, logs,
    metrics and job records have always carried."""

    DELAY = "delay"
    """Not due yet: it hops through the core until its ``not_before``."""
    RATE_LIMIT = "rate limit"
    """The job's rate limit reserved a run later than the worker waits inline."""
    LOCK_BUSY = "lock busy"
    """Its lock (or a concurrency lease) is held by another run."""
    STORE_UNREACHABLE = "coordination store unreachable"
    """The job needs the coordination store and it cannot be reached."""
    CANCELLED = "cancelled"
    """The job was cancelled before it started."""
    CHUNK_SUPERSEDED = "a copy of a chunk that was published again after a crash"
    """A fan-out job from a chunk publish cut short and published again: the later copy runs."""
    CHUNK_PUBLISHING = "its fan-out chunk is still being published"
    """A fan-out job that arrived before its chunk's publish returned."""
    DUPLICATE = "delivered again after it finished"
    """The transport handed out a message whose run had finished (:mod:`taskbridge.duplicates`)."""
    DUPLICATE_RUNNING = "delivered again while it runs"
    """The transport handed out a message that is running elsewhere: looked at again once that run
    ends or its claim runs out (:mod:`taskbridge.duplicates`)."""


class DeadCause(StrEnum):
    """What kind of failure sent a message to the dead letters; the ``reason`` text says the details
    and starts with the cause where one is fixed (``"malformed message: ..."``)."""

    MALFORMED = "malformed message"
    UNREADABLE = "unreadable message"
    UNSIGNED = "unsigned"
    """The signature is missing or does not match (:mod:`taskbridge.signing`)."""
    UNKNOWN_JOB = "unknown job"
    BAD_ARGUMENTS = "bad arguments"
    TOO_LARGE = "too large"
    FAILED = "failed"
    """The job raised (or was killed) and has no retry left."""
    CHAIN = "chain step"
    """A finished chain step whose next step cannot be run."""
    BAD_RESULT = "bad result"
    """The job returned a value that must be JSON and is not."""
    ENGINE = "engine"
    """The engine could not hand the message to the runner."""


@dataclass(frozen=True)
class Done:
    """The job ran and returned."""

    envelope: Envelope
    duration: float = 0.0
    value: Any = None
    """What the job returned."""
    kind: str = "done"


@dataclass(frozen=True)
class Retry:
    """Attempt ``envelope.attempt`` failed on a retriable error; the next attempt is published after ``delay``."""

    envelope: Envelope
    delay: float
    error: str
    duration: float = 0.0
    timed_out: bool = False
    error_type: str | None = None
    traceback: str | None = None
    kind: str = "retried"


@dataclass(frozen=True)
class Defer:
    """Not run now (delay hop, rate limit, busy lock); republished after ``delay``, not an attempt."""

    envelope: Envelope
    delay: float
    reason: Reason | str
    """A :class:`Reason`, or the text of a policy registered beside the built-in ones."""
    kind: str = "deferred"


@dataclass(frozen=True)
class Skip:
    """Not run: its lock was held and the job asked to skip in that case, or it was cancelled."""

    envelope: Envelope
    reason: Reason | str
    """A :class:`Reason`, or the text of a policy registered beside the built-in ones."""
    kind: str = "skipped"


@dataclass(frozen=True)
class Expired:
    """Not run because it was past its expiry when a worker got it."""

    envelope: Envelope
    kind: str = "expired"


@dataclass(frozen=True)
class Dead:
    """Moved to the dead-letter queue: malformed, unknown job, bad arguments, or out of retries."""

    envelope: Envelope | None
    reason: str
    raw: str | bytes | None = None
    """The item as it was read, when it is not a valid envelope."""
    duration: float = 0.0
    timed_out: bool = False
    error_type: str | None = None
    traceback: str | None = None
    """The traceback text of the last failure, when the job raised."""
    cause: DeadCause = DeadCause.FAILED
    kind: str = "dead"


Outcome = Done | Retry | Defer | Skip | Expired | Dead
