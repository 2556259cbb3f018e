"""Dispatch: the one way out of the core to an engine. Delays the transport cannot hold hop through
the core (``not_before``); messages that cannot run are written to their queue's dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import Settings, get_settings
from .engine import Engine, start_publish
from .envelope import Envelope, EnvelopeBatch, peek_job_name
from .layout import dead_letter_queue
from .signing import overhead, signed
from .wire import readable_body

DEAD_LETTER_JOB = "taskbridge.dead_letter"


def max_delay(engine: Engine, settings: Settings) -> float:
    """The longest delay handed to the transport; anything longer hops through the core."""
    cap = engine.facts.max_native_delay
    if settings.max_native_delay is not None:
        cap = min(cap, settings.max_native_delay)
    return max(cap, 0.0)


def schedule(engine: Engine, envelopes: Sequence[Envelope], delay: float, settings: Settings | None = None) -> None:
    """Publish ``envelopes`` to run after ``delay`` seconds, hopping when the transport cannot hold it."""
    if envelopes:
        settings = settings or get_settings()
        publish(engine, *_due(engine, envelopes, delay, settings), settings)


def start_schedule(
    engine: Engine, envelopes: Sequence[Envelope], delay: float, settings: Settings | None = None
) -> Callable[[], None]:
    """:func:`schedule` that returns before the broker answered (where the engine can); the function
    returned waits for the answer (see :func:`taskbridge.engine.start_publish`)."""
    settings = settings or get_settings()
    stamped, native_delay = _due(engine, envelopes, delay, settings)
    return start_publish(engine, signed(stamped, settings), native_delay)


def _due(
    engine: Engine, envelopes: Sequence[Envelope], delay: float, settings: Settings
) -> tuple[Sequence[Envelope], float]:
    """The envelopes to publish for a run after ``delay``, and the delay the transport holds."""
    if delay <= 0:
        return envelopes, 0
    due = time.time() + delay
    if isinstance(envelopes, EnvelopeBatch):
        stamped: Sequence[Envelope] = envelopes.with_not_before(due)
    else:
        stamped = [e.with_changes(not_before=due) for e in envelopes]
    return stamped, min(delay, max_delay(engine, settings))


def publish(engine: Engine, envelopes: Sequence[Envelope], delay: float, settings: Settings) -> None:
    """Hand finished envelopes to the engine: the one way out of the core, where they are signed."""
    engine.publish(signed(envelopes, settings), delay)


def publish_dead_letter(
    engine: Engine,
    *,
    queue: str,
    reason: str,
    envelope: Envelope | None,
    raw: str | bytes | None,
    settings: Settings | None = None,
    traceback: str | None = None,
) -> None:
    """Write a message that cannot run to ``<queue><dead_letter_suffix>`` with the reason, its body
    (bytes that are not UTF-8 are kept as base64, with ``body_encoding: base64``), the time
    (``failed_at``) and, when the job raised, the ``traceback`` text of the last failure."""
    settings = settings or get_settings()
    encoding: str | None = None
    if raw is not None:
        body, encoding = readable_body(raw)
    else:
        body = envelope.encode() if envelope else ""
    headers: dict[str, Any] = {
        "reason": reason,
        "job": envelope.job if envelope else (None if encoding else peek_job_name(body)),
        "id": envelope.id if envelope else None,
        "attempt": envelope.attempt if envelope else None,
        "body": body,
        "failed_at": time.time(),
    }
    if traceback:
        headers["traceback"] = traceback
    if encoding:
        headers["body_encoding"] = encoding
    record = Envelope(job=DEAD_LETTER_JOB, queue=dead_letter_queue(queue, settings), headers=headers)
    limit = engine.facts.max_message_size - overhead(settings)
    if len(record.encode()) > limit:
        # The body was within the limit, but quoted inside the record it may not be; a record the
        # transport refuses would leave the message unacknowledged, to fail again forever.
        record.headers.update(truncated=True, body_size=len(body))
        while len(record.encode()) > limit and record.headers["body"]:
            record.headers["body"] = record.headers["body"][: len(record.headers["body"]) * 3 // 4]
    publish(engine, [record], 0, settings)
