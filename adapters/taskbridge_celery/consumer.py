"""Celery's consumer, with every message it cannot turn into a task handed to taskbridge.

Celery logs and drops (acks or rejects) messages of an unregistered task name, messages that are
not Celery messages, and bodies it cannot decode. Here each goes to the engine's dead-letter path
(through the runner: it dead-letters unknown jobs and malformed envelopes without running them),
and is acknowledged only after that write succeeded.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from kombu.message import Message

from taskbridge import carrying

from .legacy import refuse_non_json
from .wire import payload_text

log = logging.getLogger("taskbridge.celery")


class EnvelopeConsumer(Consumer):  # type: ignore[misc]
    """Consumer whose unknown, invalid and undecodable messages become dead letters."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Message) -> None:
            try:
                handle(message)
            except Exception as exc:
                self._to_dead_letters(message, f"unreadable Celery message: {exc!r}")

        return on_task_received

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._to_dead_letters(message, "not a Celery task message")

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._to_dead_letters(message, f"no task named {_task_name(message)!r} in this worker")

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._to_dead_letters(message, f"invalid Celery task message: {exc}")

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._to_dead_letters(message, f"cannot decode the message body: {exc}")

    def _to_dead_letters(self, message: Message, reason: str) -> None:
        engine = self.app.taskbridge_engine
        queue = (message.delivery_info or {}).get("routing_key")
        try:
            with carrying.without_holding():  # the consumer's event loop must not wait on a broker
                if not refuse_non_json(engine._runner_or_new(), message, queue):
                    engine.dead_letter(_raw_envelope(message), reason, queue)
        except Exception:
            log.exception("could not dead-letter a message (%s); it goes back to the queue", reason)
            message.reject_log_error(log, self.connection_errors, requeue=True)
            return
        message.ack_log_error(log, self.connection_errors)


def _task_name(message: Message) -> Any:
    headers = message.headers or {}
    return headers.get("task")


def _raw_envelope(message: Message) -> str:
    """The envelope inside a Celery body if there is one, else the body as text."""
    try:
        text = payload_text(message.decode())
    except Exception:
        text = None
    if text is not None:
        return text
    body = message.body
    if isinstance(body, bytes | bytearray):
        return bytes(body).decode("utf-8", errors="replace")
    return str(body)
