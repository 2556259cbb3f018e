"""A batch for RabbitMQ written as the AMQP frames py-amqp writes for each message, rendered.

py-amqp serializes each message's properties (Celery's header table) in Python, field by field,
and looks for a ``connection.blocked`` notice (a read on the socket) before each publish: many times
the cost of the frames themselves. The messages of one ``enqueue_many`` differ only in their task id
and body, so their frames are rendered here from one template per batch: the ``Basic.Publish``
method frame, the content header frame (the properties serialized once, the task id put in) and
the body frame, byte for byte what ``Channel.basic_publish`` writes (``tests/test_celery_amqp_batch.py``
compares them).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from amqp import Message
from amqp.serialization import dumps
from amqp.spec import Basic

from taskbridge.envelope import EnvelopeBatch

from .wire import BODY_HEAD, BODY_TAIL, CONTENT_ENCODING, CONTENT_TYPE, message_headers

_FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_FRAME = struct.Struct(">BHI")
_HEADER_FRAME = struct.Struct(">BHIHHQ")
"""A content header frame up to its properties: type, channel, size, class, weight, body size."""
_HEADER_FIELDS = 12
"""Bytes of class, weight and body size in a content header."""
_ID_LENGTH = 32
"""Length of a batch's envelope ids, used as task ids: fixed, so the properties' size is too."""


def publish_method(channel_id: int, routing_key: str) -> bytes:
    """The ``Basic.Publish`` method frame to the default exchange, not mandatory, not immediate."""
    arguments = dumps("Bssbb", (0, "", routing_key, False, False))
    payload = struct.pack(">HH", *Basic.Publish) + arguments
    return _FRAME.pack(_METHOD, channel_id, len(payload)) + payload + _FRAME_END


def _properties(batch: EnvelopeBatch, eta: float | None) -> Callable[[str], bytes]:
    """Renders the serialized properties of the batch's message with a given task id."""
    placeholder = os.urandom(_ID_LENGTH // 2).hex()
    message = Message(
        b"",
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        application_headers=message_headers(batch[0], placeholder, eta),
        correlation_id=placeholder,
        reply_to="",
        delivery_mode=2,
    )
    parts = message._serialize_properties().split(placeholder.encode("ascii"))
    template = b"%b".join(part.replace(b"%", b"%%") for part in parts)
    count = len(parts) - 1
    return lambda task_id: template % ((task_id.encode("ascii"),) * count)


def frames(batch: EnvelopeBatch, eta: float | None, channel_id: int, frame_max: int) -> bytes | None:
    """The frames that publish every message of ``batch`` to its queue on channel ``channel_id``, or
    None when a message's body needs more than one frame (py-amqp then writes it as usual)."""
    if not batch or any(len(i) != _ID_LENGTH for i in batch.ids):
        return None
    method = publish_method(channel_id, batch.queue)
    properties = _properties(batch, eta)
    header_size = _HEADER_FIELDS + len(properties(batch.ids[0]))
    largest_body = frame_max - 8
    pack_header, pack_frame = _HEADER_FRAME.pack, _FRAME.pack
    out: list[bytes] = []
    for task_id, text in zip(batch.ids, batch.wrapped_texts(BODY_HEAD, BODY_TAIL), strict=True):
        body = text.encode(CONTENT_ENCODING)
        size = len(body)
        if size > largest_body:
            return None
        out += (
            method,
            pack_header(_HEADER, channel_id, header_size, Basic.CLASS_ID, 0, size),
            properties(task_id),
            _FRAME_END,
            pack_frame(_BODY, channel_id, size),
            body,
            _FRAME_END,
        )
    return b"".join(out)
