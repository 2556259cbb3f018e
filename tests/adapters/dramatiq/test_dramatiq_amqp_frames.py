"""The Dramatiq engine's RabbitMQ batches: the frames pika itself writes for each message."""

from __future__ import annotations

import pika
import pytest
from pika import frame, spec
from taskbridge_dramatiq.brokers.amqp_frames import publish_frames

CHANNEL = 5
BODY_MAX = 131072 - 8
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _pikas_own(routing_key: str, bodies: list[bytes], properties: spec.BasicProperties) -> bytes:
    """What pika's ``Connection._send_message`` marshals for each body, as it does."""
    out = []
    for body in bodies:
        out.append(frame.Method(CHANNEL, spec.Basic.Publish(exchange="", routing_key=routing_key)).marshal())
        out.append(frame.Header(CHANNEL, len(body), properties).marshal())
        out.append(frame.Body(CHANNEL, body).marshal())
    return b"".join(out)


@pytest.mark.parametrize(
    "properties", [PERSISTENT, pika.BasicProperties(delivery_mode=2, headers={"x": "zürich"}, priority=3)]
)
def test_rendered_frames_are_the_frames_pika_writes(properties: spec.BasicProperties) -> None:
    bodies = [b'{"a":1}', "zürich ✓".encode(), b"x" * 70_000, b"\xce" * 3]
    assert publish_frames(CHANNEL, "emails.high.DQ", bodies, properties, BODY_MAX) == _pikas_own(
        "emails.high.DQ", bodies, properties
    )


def test_a_body_pika_must_split_or_leave_out_is_left_to_pika() -> None:
    assert publish_frames(CHANNEL, "q", [b"1", b"x" * (BODY_MAX + 1)], PERSISTENT, BODY_MAX) is None
    assert publish_frames(CHANNEL, "q", [b"1", b""], PERSISTENT, BODY_MAX) is None
    assert publish_frames(CHANNEL, "q", [b"x" * BODY_MAX], PERSISTENT, BODY_MAX) is not None
