"""Celery's consumer, guarded: only well-formed task messages of declared jobs reach Celery.

Every message a worker receives, on every transport, comes through :meth:`EnvelopeConsumer.on_item`
first. A Celery task message of a declared job carrying one envelope, or an old producer's message
for a name a job declares in ``aliases=``, goes on to Celery (and its pool). Anything else is read
by :func:`taskbridge.wire.unwrap`: an envelope of a declared job in another wrapper (a Dramatiq
message on a shared queue, a bare envelope) becomes that job's task message and runs in the pool
like any other; every other item goes to the runner's ``run_item``, which dead-letters it to the
dead letters of the queue it was read from. The message is acknowledged only after that write
succeeded, and requeued if it failed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from celery.exceptions import CPendingDeprecationWarning
from celery.worker import loops as celery_loops
from celery.worker import request as celery_request
from celery.worker.consumer import Consumer
from celery.worker.consumer import consumer as celery_consumer
from celery.worker.consumer.tasks import Tasks
from kombu.message import Message

from taskbridge import carrying
from taskbridge.envelope import peek_id, peek_job_name
from taskbridge.legacy import is_legacy
from taskbridge.outage import broker_outage
from taskbridge.wire import JSON_CONTENT_TYPES, unwrap

from .app_engines import engine_of
from .consumer_tasks import fall_back_to_per_consumer_qos, global_qos_refused
from .items import ITEM_HEADER
from .tasks import EnvelopeTask
from .wire import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    carries_one_envelope,
    message_body,
    task_headers,
    task_id_for,
    whole_body,
)

log = logging.getLogger("taskbridge.celery")

_ACK_FAILED = "Couldn't ack %r, reason:%r"
"""kombu's message (Message.ack_log_error) when an acknowledgement cannot be sent."""
_LOOP_CLEANUP_ERROR = "Error cleaning up after event loop: %r"
"""Celery's message (celery.worker.loops) when resetting the event loop after an error fails."""


class EnvelopeConsumer(Consumer):  # type: ignore[misc]
    """Consumer whose messages are all run, or dead-lettered then acknowledged; a lost broker is
    logged once, then reminded (taskbridge.outage), in place of Celery's line per reconnection attempt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tasks_step = self.blueprint.steps.get(Tasks.name)
        if tasks_step is not None:
            fall_back_to_per_consumer_qos(tasks_step, self)
        celery_log = logging.getLogger(celery_consumer.__name__)
        if not any(isinstance(f, _ConnectionErrorsToOutage) for f in celery_log.filters):
            celery_log.addFilter(_ConnectionErrorsToOutage())
        for name in (celery_request.__name__, log.name):
            acks_log = logging.getLogger(name)
            if not any(isinstance(f, _AckOverLostConnection) for f in acks_log.filters):
                acks_log.addFilter(_AckOverLostConnection())
        loop_log = logging.getLogger(celery_loops.__name__)
        if not any(isinstance(f, _LostConnectionCleanup) for f in loop_log.filters):
            loop_log.addFilter(_LostConnectionCleanup(self))

    def connect(self) -> Any:
        connection = super().connect()  # returns once connected: Celery retries with back-off meanwhile
        broker_outage().succeeded()
        return connection

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if not global_qos_refused(self, exc):
            broker_outage().failed(exc)
        with warnings.catch_warnings():
            # Celery's notice that running late-ack jobs are not cancelled on a lost connection: as
            # intended here (each is acknowledged, or delivered again, per the transport).
            warnings.simplefilter("ignore", CPendingDeprecationWarning)
            super().on_connection_error_after_connected(exc)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Message], None]:
        self._celery_handle = super().create_task_handler(*args, **kwargs)
        return self.on_item

    def on_item(self, message: Message) -> None:
        """Hand ``message`` to Celery if it is one of our task messages, else to the runner."""
        try:
            self._route(message)
        except Exception as exc:  # one message must never stop the consumer
            log.exception("a message could not be routed; it goes to the dead letters")
            self._dead_letter(message, f"the worker could not read the message: {exc!r}")

    def _route(self, message: Message) -> None:
        if self._is_task_message(message):
            self._to_celery(message)
            return
        queue = self._queue_of(message)
        body = _body(message)
        wrapper = _is_wrapper(message)
        content_type = None if wrapper else message.content_type
        headers = message.headers if isinstance(message.headers, dict) and not wrapper else None
        item = unwrap(body, content_type=content_type, headers=headers)
        if item.envelope is not None:
            job = peek_job_name(item.envelope)
            limit = engine_of(self.app).facts.max_message_size
            if job is not None and self._declared(job) and len(item.envelope) <= limit:
                _rewrite_as_task(message, job, item.envelope)
                self._hand_whole(message, job)
                self._to_celery(message)
                return
        redelivered = (message.delivery_info or {}).get("redelivered") is True
        self._carry_out(
            message,
            lambda runner: runner.run_item(
                body, queue, content_type=content_type, headers=headers, redelivered=redelivered
            ),
        )

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._dead_letter(message, "not a Celery task message")

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._dead_letter(message, f"no task named {_task_name(message)!r} in this worker")

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._dead_letter(message, f"invalid Celery task message: {exc}")

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._dead_letter(message, f"cannot decode the message body: {exc}")

    def _to_celery(self, message: Message) -> None:
        try:
            self._celery_handle(message)
        except Exception as exc:
            self._dead_letter(message, f"unreadable Celery message: {exc!r}")

    def _is_task_message(self, message: Message) -> bool:
        headers = message.headers
        if not isinstance(headers, dict) or ITEM_HEADER in headers:
            return False
        name = headers.get("task")
        if not isinstance(name, str) or not self._declared(name) or not isinstance(headers.get("id"), str):
            return False
        if message.content_type not in JSON_CONTENT_TYPES:
            return False
        if self._hand_whole(message, name):
            return True
        try:
            payload = message.decode()  # cached on the message: Celery's request reads it from there
        except Exception:
            return False
        # An old producer's call of a job's former name (aliases=) is converted by its task, in the pool.
        return carries_one_envelope(payload) or (_celery_body(payload) and is_legacy(name, payload[0], payload[1]))

    def _declared(self, name: str) -> bool:
        return isinstance(self.app.tasks.get(name), EnvelopeTask)

    def _hand_whole(self, message: Message, name: str) -> bool:
        """Make a body taskbridge wrote the message's payload as it is (wire.whole_body), for the
        job's task to read in the pool; False for any other body, or a task that reads none."""
        if not self.app.tasks[name].reads_whole_body or "compression" in message.headers:
            return False
        payload = whole_body(message.body)
        if payload is None:
            return False
        message._decoded_cache = payload  # what Celery's strategy and request take as the decoded body
        return True

    def _queue_of(self, message: Message) -> str:
        """The queue the message was read from: by its consumer tag on AMQP; on Redis and SQS the
        guarded channel stamps it as the routing key (see items.py)."""
        info = message.delivery_info or {}
        tag = info.get("consumer_tag")
        consumer = getattr(self, "task_consumer", None)
        if tag is not None and consumer is not None:
            for queue, active in getattr(consumer, "_active_tags", {}).items():
                if active == tag:
                    return str(queue)
        routing_key = info.get("routing_key")
        if routing_key:
            return str(routing_key)
        consumed = [queue.name for queue in self.app.conf.task_queues or ()]
        return consumed[0] if len(consumed) == 1 else str(self.app.conf.task_default_queue)

    def _dead_letter(self, message: Message, reason: str) -> None:
        queue = self._queue_of(message)
        self._carry_out(message, lambda runner: runner.dead_letter(_body(message), reason, queue))

    def _carry_out(self, message: Message, action: Callable[[Any], object]) -> None:
        try:
            with carrying.without_holding():  # the consumer's event loop must not wait on a broker
                action(engine_of(self.app).runner)
        except Exception:
            log.exception("could not dead-letter a message; it goes back to the queue")
            message.reject_log_error(log, self.connection_errors, requeue=True)
            return
        message.ack_log_error(log, self.connection_errors)


class _ConnectionErrorsToOutage(logging.Filter):
    """Celery's consumer logs each failed reconnection attempt (and the lost connection) itself:
    those records go to the broker's outage record instead, which logs once and then reminds."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == celery_consumer.CONNECTION_ERROR and isinstance(record.args, tuple) and len(record.args) > 1:
            cause = record.args[1]
            broker_outage().failed(cause if isinstance(cause, BaseException) else str(cause))
            return False
        args = record.args
        return not (isinstance(args, tuple) and args[:1] == (celery_consumer.CONNECTION_RETRY,))


class _AckOverLostConnection(logging.Filter):
    """kombu logs a traceback (CRITICAL) for each acknowledgement sent over a connection that is
    gone; one line says it instead: the broker delivers the message again (at-least-once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _ACK_FAILED and record.exc_info:
            record.msg = "could not acknowledge message %r, its broker connection is gone (%r): it is delivered again"
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _LostConnectionCleanup(logging.Filter):
    """Celery logs a traceback when closing the event loop's sockets fails after the broker
    connection was lost; that failure is part of the outage, which the outage record reports."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self._consumer = consumer

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        lost = tuple(self._consumer.connection_errors or ())
        if record.msg == _LOOP_CLEANUP_ERROR and error is not None and lost and isinstance(error, lost):
            broker_outage().failed(error)
            return False
        return True


def _body(message: Message) -> bytes | str:
    body = message.body
    if isinstance(body, bytes | str):
        return body
    return b"" if body is None else repr(body)


def _celery_body(payload: Any) -> bool:
    return (
        isinstance(payload, list | tuple)
        and len(payload) == 3
        and isinstance(payload[0], list)
        and isinstance(payload[1], dict)
    )


def _is_wrapper(message: Message) -> bool:
    headers = message.headers
    return isinstance(headers, dict) and ITEM_HEADER in headers


def _rewrite_as_task(message: Message, job: str, envelope: str) -> None:
    """Make ``message`` the Celery task message of ``job`` carrying ``envelope``, so it runs in the
    pool like one; its delivery (tag, queue, redelivery) stays the broker's."""
    task_id = task_id_for(peek_id(envelope))
    message.headers = task_headers(job, task_id, f"<envelope from a {job} message of another producer>")
    message.body = message_body(envelope)
    message.content_type = CONTENT_TYPE
    message.content_encoding = CONTENT_ENCODING
    message._decoded_cache = None


def _task_name(message: Message) -> Any:
    headers = message.headers
    return headers.get("task") if isinstance(headers, dict) else None
