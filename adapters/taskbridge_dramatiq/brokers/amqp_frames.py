"""The AMQP frames pika writes to publish a batch of bodies to one queue, rendered at once.

pika builds, marshals and hands over three frame objects per message, and its I/O loop sends each
frame in a ``send`` call of its own. The messages of a batch share their method and properties, so
those frames are marshaled once (by pika) and only the body size and the body change per message;
the whole batch then goes to the connection as one piece of data.
``tests/test_dramatiq_amqp_frames.py`` compares the bytes with pika's.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pika import frame, spec

_FRAME = struct.Struct(">BHI")
_BODY_SIZE = struct.Struct(">Q")
_BODY_SIZE_AT = 7 + 4
"""Where a content header frame holds the body size: after the frame's type, channel and size
(7 bytes), the class id and the weight (4 bytes)."""
_FRAME_END = bytes([spec.FRAME_END])


def publish_frames(
    channel_number: int, routing_key: str, bodies: Sequence[bytes], properties: spec.BasicProperties, body_max: int
) -> bytes | None:
    """The frames of ``Basic.Publish`` of each body to ``routing_key`` through the default exchange,
    with ``properties``; None if a body is empty or longer than ``body_max``, the most one frame
    holds (pika then writes it as usual)."""
    if any(len(body) > body_max or not body for body in bodies):
        return None
    method = frame.Method(channel_number, spec.Basic.Publish(exchange="", routing_key=routing_key)).marshal()
    header = frame.Header(channel_number, 0, properties).marshal()
    head, tail = method + header[:_BODY_SIZE_AT], header[_BODY_SIZE_AT + _BODY_SIZE.size :]
    pack_size, pack_frame = _BODY_SIZE.pack, _FRAME.pack
    out: list[bytes] = []
    for body in bodies:
        size = len(body)
        out += (head, pack_size(size), tail, pack_frame(spec.FRAME_BODY, channel_number, size), body, _FRAME_END)
    return b"".join(out)
