"""Carrying out an outcome until it is stored: the worker holds the message, backs off, never re-runs the job.

Once the runner has decided an outcome (retry, defer, dead letter), the job's body has run and
must not run again because the outcome could not be written. A failed write is retried in place,
with exponential back-off up to :data:`MAX_BACKOFF`, while the worker holds the message
unacknowledged; the first failure per queue logs one error naming the queue and the cause, later
ones a reminder at most every :data:`REMINDER_EVERY` seconds. A cause that goes away (a broker
back from a restart, a queue released or fixed by an operator) lets the same outcome through; the
message is then acknowledged as usual.

The message comes back to another worker, and the job runs again, only where the transport itself
redelivers what a worker holds: when the worker process dies, when its connection drops, or after
the Redis/SQS visibility timeout under the Celery engine.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .envelope import peek_queue
from .layout import dead_letter_queue
from .outcomes import Dead

if TYPE_CHECKING:
    from .config import Settings
    from .outcomes import Outcome

log = logging.getLogger("taskbridge.carrying")

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
REMINDER_EVERY = 60.0


@dataclass
class _Trouble:
    """What is known about failed writes to one queue, for the rate-limited log."""

    since: float
    last_logged: float
    failures: int = 0
    holding: set[int] = field(default_factory=set)


_lock = threading.Lock()
_troubles: dict[str, _Trouble] = {}
_holding_threads: set[int] = set()
_local = threading.local()


def target_queue(outcome: Outcome, source: str | None, settings: Settings) -> str:
    """The queue an outcome's write goes to: the dead-letter queue of the message's queue, or the
    message's own queue for a retry or deferral."""
    envelope = outcome.envelope
    queue = (envelope.queue if envelope else None) or source
    if isinstance(outcome, Dead):
        if queue is None and outcome.raw is not None:
            queue = peek_queue(outcome.raw)
        return dead_letter_queue(queue or settings.default_queue, settings)
    return queue or settings.default_queue


def store(write: Callable[[], None], outcome: Outcome, source: str | None, settings: Settings) -> None:
    """Run ``write`` (the outcome's republish or dead-letter write) until it succeeds.

    Returns once stored; meanwhile the calling worker thread holds the message. Only a
    ``BaseException`` that is not an ``Exception`` (shutdown, an abandoned thread) ends it early.
    Inside :func:`without_holding` it writes once and raises what the write raised.
    """
    try:
        write()
        return
    except Exception as exc:
        if getattr(_local, "once", False):
            raise
        first_error = exc
    queue = target_queue(outcome, source, settings)
    ident = threading.get_ident()
    with _lock:
        _holding_threads.add(ident)
    try:
        _note_failure(queue, outcome, first_error, ident)
        backoff = FIRST_BACKOFF
        while True:
            time.sleep(backoff * random.uniform(0.8, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)
            try:
                write()
            except Exception as exc:
                _note_failure(queue, outcome, exc, ident)
                continue
            _note_stored(queue, outcome, ident)
            return
    finally:
        with _lock:
            _holding_threads.discard(ident)


@contextlib.contextmanager
def without_holding() -> Iterator[None]:
    """Within the block, :func:`store` writes once and raises on failure: for callers that must not
    block (an engine's event loop, a watchdog thread) and hand the message back themselves."""
    previous = getattr(_local, "once", False)
    _local.once = True
    try:
        yield
    finally:
        _local.once = previous


def is_holding(thread_id: int) -> bool:
    """Whether that thread is storing an outcome (its job's body is over; it holds the message)."""
    with _lock:
        return thread_id in _holding_threads


def _describe(outcome: Outcome) -> str:
    envelope = outcome.envelope
    what = {"retried": "retry", "deferred": "deferral", "dead": "dead letter"}.get(outcome.kind, outcome.kind)
    if envelope is None:
        return f"the {what} of an unreadable message"
    return f"the {what} of job {envelope.job} (id {envelope.id}, attempt {envelope.attempt})"


def _cause(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} (caused by {type(cause).__name__}: {cause})"
    return f"{type(exc).__name__}: {text}"


def _note_failure(queue: str, outcome: Outcome, exc: BaseException, ident: int) -> None:
    now = time.monotonic()
    with _lock:
        trouble = _troubles.get(queue)
        first = trouble is None
        if trouble is None:
            trouble = _troubles[queue] = _Trouble(since=now, last_logged=now)
        trouble.failures += 1
        trouble.holding.add(ident)
        remind = not first and now - trouble.last_logged >= REMINDER_EVERY
        if remind:
            trouble.last_logged = now
        failures, held, since = trouble.failures, len(trouble.holding), now - trouble.since
    if first:
        log.error(
            "cannot write to queue %r: %s. Storing %s failed; this worker holds the message and retries "
            "with back-off (up to %gs), and the job does not run again meanwhile. Fix the cause (the queue's "
            "permissions, another connection's exclusive hold on it, ...) and it goes through.",
            queue,
            _cause(exc),
            _describe(outcome),
            MAX_BACKOFF,
        )
    elif remind:
        log.error(
            "still cannot write to queue %r after %.0fs (%d failed writes, %d message(s) held): %s",
            queue,
            since,
            failures,
            held,
            _cause(exc),
        )


def _note_stored(queue: str, outcome: Outcome, ident: int) -> None:
    with _lock:
        trouble = _troubles.get(queue)
        if trouble is None:
            return
        trouble.holding.discard(ident)
        if not trouble.holding:
            del _troubles[queue]
        failures = trouble.failures
    log.warning("queue %r takes writes again: stored %s (%d failed writes before)", queue, _describe(outcome), failures)
