"""How a taskbridge outcome shows in Celery: the state its log line, task events and Flower show.

The runner carries out every outcome inside the task body (republish, dead letter), so the task
ends by telling Celery what happened: a job that ran returns its value (``succeeded``), a retried
or deferred one raises Celery's :class:`~celery.exceptions.Retry` (``retry:``, a ``task-retried``
event), a dead-lettered one raises :class:`DeadLettered` (``raised unexpected``, ``task-failed``), and
a skipped or expired one raises :class:`~celery.exceptions.Ignore` (``ignored``, a
``task-revoked`` event as for Celery's own expired tasks). Each of these
leaves the message to be acknowledged; none makes Celery publish anything.
"""

from __future__ import annotations

from typing import Any, NoReturn

from celery.exceptions import Ignore, Retry

from taskbridge.outcomes import Dead, Defer, Done, Expired, Outcome, Skip
from taskbridge.outcomes import Retry as Retried

NOT_RUN = ("skipped", "expired")
"""Outcomes of a job not run by its own rules (the Ignore's argument): Celery logs ``ignored``."""


class DeadLettered(Exception):
    """The job was dead-lettered (out of retries, bad arguments, unknown job...): Celery shows the
    task as failed, with the reason, and (Python 3.11+) the job's own traceback as a note when it raised."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobRetried(Exception):
    """Why a job goes round again (the ``exc`` of Celery's Retry, shown in the task-retried event)."""


def settle(outcome: Outcome) -> Any:
    """The task body's ending for ``outcome``, already carried out: its value, or the exception
    that gives Celery the matching state."""
    if isinstance(outcome, Done):
        return outcome.value
    if isinstance(outcome, Retried):
        attempt = outcome.envelope.attempt
        _retry(
            f"attempt {attempt} failed ({outcome.error}); attempt {attempt + 1} in {outcome.delay:.3g}s",
            outcome.error,
            outcome.delay,
        )
    if isinstance(outcome, Defer):
        _retry(f"deferred {outcome.delay:.3g}s ({outcome.reason}), not an attempt", outcome.reason, outcome.delay)
    if isinstance(outcome, Skip | Expired):
        raise Ignore(outcome.kind)
    if isinstance(outcome, Dead):
        failed = DeadLettered(outcome.reason)
        add_note = getattr(failed, "add_note", None)  # Python 3.11+
        if outcome.traceback and add_note is not None:
            add_note(outcome.traceback.rstrip())
        raise failed from None
    raise AssertionError(f"unknown outcome {outcome!r}")


def _retry(message: str, why: str, delay: float) -> NoReturn:
    raise Retry(message, JobRetried(why), delay) from None
