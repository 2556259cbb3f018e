"""kombu's SQS transport with a guarded read: every SQS body becomes a kombu message routed to the
queue it was received from (kombu gives a body it cannot read no queue at all).

Celery gets it as ``broker_transport`` (``taskbridge_celery.guarded_sqs:SQSTransport``).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import SQS

from .items import ITEM_HEADER, kombu_payload


class GuardedSQSChannel(SQS.Channel):  # type: ignore[misc]
    """kombu's SQS channel whose messages carry the queue they were received from, whatever the body."""

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


def _is_wrapper(payload: dict[str, Any]) -> bool:
    return ITEM_HEADER in (payload.get("headers") or {})
