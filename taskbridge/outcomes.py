"""Outcomes: what the runner decided for one message, carried out the same way on every engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .envelope import Envelope


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
    reason: str
    kind: str = "deferred"


@dataclass(frozen=True)
class Skip:
    """Not run because its lock was held and the job asked to skip in that case."""

    envelope: Envelope
    reason: str
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
    kind: str = "dead"


Outcome = Done | Retry | Defer | Skip | Expired | Dead
