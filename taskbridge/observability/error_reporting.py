"""Error reporting: job exceptions go to Sentry, with job name, id and attempt, when sentry-sdk is set up.

Nothing is needed when sentry-sdk is not installed. With it installed, a worker reports when
Sentry is configured: the setting ``sentry_dsn`` (``TASKBRIDGE_SENTRY_DSN``), ``SENTRY_DSN``, or
a ``sentry_sdk.init()`` the application already made. Each failed attempt is reported once, as
an error when it is dead-lettered and a warning when it will be retried; jobs the engine killed
(hard timeout, lost worker process) are reported as messages, since no exception was raised.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from . import events

log = logging.getLogger("taskbridge.error_reporting")

_MAX_PENDING = 256
_lock = threading.Lock()
_pending: OrderedDict[tuple[Any, Any], BaseException] = OrderedDict()
_installed = False


def available() -> bool:
    """True when sentry-sdk is installed."""
    try:
        import sentry_sdk  # noqa: F401
    except ImportError:
        return False
    return True


def install(dsn: str | None = None) -> bool:
    """Report job exceptions to Sentry from this process; returns whether reporting is on.

    ``dsn`` defaults to the ``sentry_dsn`` setting, then ``SENTRY_DSN``. If sentry-sdk is already
    initialised, that client is used as it is. Calling it again is harmless.
    """
    global _installed
    try:
        import sentry_sdk
    except ImportError:
        return False
    with _lock:
        if _installed:
            return True
        if not sentry_sdk.get_client().is_active():
            if dsn is None:
                from ..config import get_settings

                dsn = get_settings().sentry_dsn or os.environ.get("SENTRY_DSN")
            if not dsn:
                return False
            sentry_sdk.init(dsn=dsn)
        events.subscribe_exceptions(_remember)
        events.subscribe(_report)
        _installed = True
    log.info("error reporting: job exceptions are reported to Sentry")
    return True


def uninstall() -> None:
    """Stop reporting from this process (the Sentry client itself is left as it is)."""
    global _installed
    with _lock:
        events.unsubscribe_exceptions(_remember)
        events.unsubscribe(_report)
        _pending.clear()
        _installed = False


def _remember(exc: BaseException, event: events.RaisedEvent) -> None:
    with _lock:
        _pending[(event.id, event.attempt)] = exc
        while len(_pending) > _MAX_PENDING:
            _pending.popitem(last=False)


def _report(event: events.Event) -> None:
    if not isinstance(event, events.RetriedEvent | events.DeadEvent) or not event.error_type:
        return
    import sentry_sdk

    with _lock:
        exc = _pending.pop((event.id, event.attempt), None)
    job = event.job or "unknown"
    details = {
        "job": event.job,
        "id": event.id,
        "attempt": event.attempt,
        "queue": event.queue,
        "duration": event.duration,
        "error_type": event.error_type,
        "timed_out": event.timed_out,
        "outcome": event.kind,
    }
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("taskbridge.job", job)
        scope.set_tag("taskbridge.id", str(event.id))
        scope.set_tag("taskbridge.attempt", str(event.attempt))
        scope.set_tag("taskbridge.queue", str(event.queue))
        scope.set_tag("taskbridge.outcome", event.kind)
        scope.set_context("taskbridge", details)
        scope.level = "error" if event.kind == "dead" else "warning"
        if exc is not None:
            sentry_sdk.capture_exception(exc)
        else:
            error = event.error if isinstance(event, events.RetriedEvent) else ""
            sentry_sdk.capture_message(f"job {job} failed without an exception ({event.error_type}): {error}".strip())
