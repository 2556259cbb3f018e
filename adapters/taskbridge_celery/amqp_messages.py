"""Celery messages for a batch published straight on a py-amqp channel, with less work per message
than py-amqp's own: the content header's properties are serialized from parts encoded once.

py-amqp serializes a message's properties, Celery's sixteen headers among them, item by item for
every message; of those headers only the task id changes from one message to the next of a batch
(the rest depend on the job, the attempt and the ETA). :class:`CeleryProperties` encodes the rest
once per kind of message and only the id per message; the bytes are exactly what py-amqp would
write for ``message_headers`` (``tests/test_celery_publisher.py`` reads them back with py-amqp).
"""

from __future__ import annotations

from struct import pack
from typing import Any

from amqp import Message
from amqp.serialization import dumps

from taskbridge import Envelope

from .wire import CONTENT_ENCODING, CONTENT_TYPE, message_headers

PER_MESSAGE_HEADERS = ("id", "root_id")
"""The headers whose value is the task id: the only ones encoded for every message."""
_CACHED_KINDS = 1024
"""Encoded headers kept by (job, attempt, ETA); past this many the cache starts over."""
_FLAGS = pack(">H", 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0400 | 0x0200)
"""Property flags: content_type, content_encoding, application_headers, delivery_mode,
correlation_id and reply_to are present (AMQP 0-9-1 basic properties, highest bit first)."""
PERSISTENT = 2
"""delivery_mode of a message RabbitMQ stores on disk."""


def _shortstr(value: str) -> bytes:
    data = value.encode()
    return pack("B", len(data)) + data


def _table_items(table: dict[str, Any]) -> bytes:
    """A field table's items as py-amqp encodes them, without the table's length."""
    return dumps("F", [table])[4:]


class CeleryProperties:
    """The serialized basic properties of taskbridge's Celery messages."""

    def __init__(self) -> None:
        self._head = _FLAGS + _shortstr(CONTENT_TYPE) + _shortstr(CONTENT_ENCODING)
        self._id_keys = [_shortstr(name) for name in PER_MESSAGE_HEADERS]
        self._kinds: dict[tuple[str, int, float | None], bytes] = {}

    def encode(self, envelope: Envelope, task_id: str, eta: float | None) -> bytes:
        """What py-amqp writes for a message with ``message_headers(envelope, task_id, eta)``,
        content type and encoding, persistent delivery, ``correlation_id=task_id`` and ``reply_to=""``."""
        key = (envelope.job, envelope.attempt, eta)
        shared = self._kinds.get(key)
        if shared is None:
            if len(self._kinds) >= _CACHED_KINDS:
                self._kinds.clear()
            headers = message_headers(envelope, task_id, eta)
            for name in PER_MESSAGE_HEADERS:
                del headers[name]
            shared = self._kinds[key] = _table_items(headers)
        task_id_bytes = task_id.encode()
        id_value = b"S" + pack(">I", len(task_id_bytes)) + task_id_bytes
        items = b"".join([*(key + id_value for key in self._id_keys), shared])
        return b"".join(
            [
                self._head,
                pack(">I", len(items)),
                items,
                pack("B", PERSISTENT),
                pack("B", len(task_id_bytes)),
                task_id_bytes,
                b"\x00",  # reply_to: empty
            ]
        )


class PreparedMessage(Message):  # type: ignore[misc]
    """A py-amqp message whose properties come serialized (:class:`CeleryProperties`)."""

    def __init__(self, body: bytes, properties: bytes) -> None:
        super().__init__(body)
        self._serialized_properties = properties

    def _serialize_properties(self) -> bytes:
        return self._serialized_properties
