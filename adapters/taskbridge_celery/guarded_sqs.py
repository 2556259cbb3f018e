"""kombu's SQS transport with a guarded read: every SQS body becomes a kombu message routed to the
queue it was received from (kombu gives a body it cannot read no queue at all), and a failed poll
is retried instead of stopping the worker.

Celery gets it as ``broker_transport`` (``taskbridge_celery.guarded_sqs:SQSTransport``).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import SQS

from taskbridge.outage import broker_outage

from .items import ITEM_HEADER, kombu_payload

RETRY_FAILED_POLL = 1.0
"""Seconds before a queue whose last poll failed (no connection, timeout, 5xx) is polled again."""

FAILED_POLL = "a poll of the queue could not connect, timed out or met a server error"

log = logging.getLogger("taskbridge.celery")


class GuardedSQSChannel(SQS.Channel):  # type: ignore[misc]
    """kombu's SQS channel whose messages carry the queue they were received from, whatever the body,
    and whose worker outlives a poll that failed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._failed_polls: set[str] = set()
        super().__init__(*args, **kwargs)

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        if not isinstance(messages, dict):
            # kombu's client answers a poll that could not connect, timed out or met a 5xx with [],
            # which kombu's handler cannot read (the worker stopped): count it as a failed poll.
            # kombu logs nothing of it, so the outage record is the worker's only word on it.
            self._failed_polls.add(qname)
            broker_outage().failed(FAILED_POLL)
            return 0
        broker_outage().succeeded()
        return super()._on_messages_ready(queue, qname, messages)  # type: ignore[no-any-return]

    def new_sqs_client(self, *args: Any, **kwargs: Any) -> Any:
        client = super().new_sqs_client(*args, **kwargs)
        # kombu forgets a delivery whose DeleteMessage SQS refused (an expired or unknown receipt
        # handle) without a word; the message then runs again after the visibility timeout.
        client.meta.events.register("after-call.sqs.DeleteMessage", _warn_refused_delete)
        return client

    def _loop1(self, queue: str, messages_fetched: int | None = None) -> None:
        if queue in self._failed_polls:
            self._failed_polls.discard(queue)
            self.hub.call_later(RETRY_FAILED_POLL, self._schedule_queue, queue)
            return
        super()._loop1(queue, messages_fetched)

    def _message_to_python(self, message: Any, queue_name: str, q_url: str) -> dict[str, Any]:
        if queue_name in self._noack_queues:
            return super()._message_to_python(message, queue_name, q_url)  # type: ignore[no-any-return]
        raw = message["Body"]
        payload = kombu_payload(raw, queue_name)
        if _is_wrapper(payload) and not raw.lstrip().startswith("{"):
            # kombu producers may base64 the whole message (kombu's default sqs_base64_encoding).
            decoded = self._decode_python_message_body(raw)
            if decoded != raw.encode():
                inner = kombu_payload(decoded, queue_name)
                if not _is_wrapper(inner):
                    payload = inner
        return self._envelope_payload(payload, raw, message, q_url)  # type: ignore[no-any-return]


class SQSTransport(SQS.Transport):  # type: ignore[misc]
    """kombu's SQS transport with :class:`GuardedSQSChannel`."""

    Channel = GuardedSQSChannel


def _warn_refused_delete(parsed: dict[str, Any], **_: Any) -> None:
    error = parsed.get("Error")
    if error:
        log.warning(
            "SQS refused to delete a finished message (%s: %s); it will be delivered and run again after the "
            "visibility timeout",
            error.get("Code"),
            error.get("Message"),
        )


def _is_wrapper(payload: dict[str, Any]) -> bool:
    return ITEM_HEADER in (payload.get("headers") or {})
