"""The Celery request of a job, in the worker's main process: a child killed at ``hard_timeout``
is carried out as a failure of the job (retried or dead-lettered by its policy), never dropped."""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.exceptions import Ignore, Reject, Retry, Terminated
from celery.worker import state
from celery.worker.request import Request
from kombu.message import Message

from taskbridge import carrying

from .app_engines import engine_of
from .states import NOT_RUN, DeadLettered
from .wire import envelope_text, is_whole_body

log = logging.getLogger("taskbridge.celery")

_CARRIED_OUT = (
    DeadLettered,
    Reject,
    Ignore,
    Retry,
    Terminated,
    WorkerLostError,
    SystemExit,
    KeyboardInterrupt,
    MemoryError,
)
"""Endings the runner already carried out (an outcome reported by taskbridge_celery.states), or
Celery carries out itself: Reject(requeue) when the runner could not finish, a lost child
(requeued: reject_on_worker_lost), revocation and shutdown."""


class EnvelopeRequest(Request):
    """Adds to Celery's request: hard timeout -> ``fail_killed``; any other failure of the
    task machinery (the body never reached the runner) -> dead letter. Acknowledged after that.
    A body the consumer hands whole (wire.whole_body) goes to the pool as it is, not re-read there."""

    def __init__(self, message: Message, **kwargs: Any) -> None:
        payload = message._decoded_cache
        if is_whole_body(payload):
            kwargs["body"], kwargs["decoded"] = payload, True
        super().__init__(message, **kwargs)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, Ignore) and exc.args and exc.args[0] in NOT_RUN:
            # What Celery sends for a task it discards unrun (its own expired tasks): Flower shows it ended.
            self.send_event("task-revoked", terminated=False, signum=None, expired=exc.args[0] == "expired")
        if not isinstance(exc, _CARRIED_OUT) and not state.should_terminate:
            if not self._carry_out(exc):
                self.reject(requeue=True)
                return
            self.acknowledge()
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _carry_out(self, exc: BaseException) -> bool:
        runner = engine_of(self._app).runner
        raw = envelope_text(self.args, self.kwargs) or self._message.body
        queue = (self.delivery_info or {}).get("routing_key")
        try:
            # In the worker's main process, whose event loop must not wait on a broker: one write.
            with carrying.without_holding():
                if isinstance(exc, TimeLimitExceeded):
                    limit = exc.args[0] if exc.args else "?"
                    reason = f"killed at its hard_timeout ({limit}s)"
                    runner.fail_killed(raw, reason, timed_out=True, queue=queue)
                else:
                    runner.dead_letter(raw, f"the Celery task failed before the job ran: {exc!r}", queue)
        except Exception:
            log.exception("job %s: could not carry out %r; the message goes back to the queue", self.name, exc)
            return False
        return True
