"""The Celery engine's RabbitMQ batches: the frames py-amqp itself writes for each message."""

from __future__ import annotations

from typing import Any

import pytest
from amqp import Message
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from amqp.spec import Basic
from taskbridge_celery.amqp_batch import frames
from taskbridge_celery.wire import CONTENT_ENCODING, CONTENT_TYPE, message_body, message_headers

from taskbridge.envelope import EnvelopeBatch, json_arguments

CHANNEL_ID = 3
FRAME_MAX = 131072


class _Written:
    """What py-amqp's frame writer needs of a connection and its transport, keeping what is written."""

    def __init__(self) -> None:
        self.frame_max = FRAME_MAX
        self.bytes_sent = 0
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += bytes(data)


def _py_amqp_frames(batch: EnvelopeBatch, eta: float | None) -> bytes:
    written = _Written()
    write_frame = frame_writer(written, written)

    for envelope, text in zip(batch, batch.texts, strict=True):
        message = Message(
            message_body(text),
            content_type=CONTENT_TYPE,
            content_encoding=CONTENT_ENCODING,
            application_headers=message_headers(envelope, envelope.id, eta),
            correlation_id=envelope.id,
            reply_to="",
            delivery_mode=2,
        )
        write_frame(1, CHANNEL_ID, Basic.Publish, dumps("Bssbb", (0, "", batch.queue, False, False)), message)
    return bytes(written.data)


def _batch(calls: list[tuple[Any, ...]], **fields: Any) -> EnvelopeBatch:
    options: dict[str, Any] = {"enqueued_at": 1_800_000_000.5, "expires_at": None, "not_before": None, "headers": {}}
    batch = EnvelopeBatch("celery.echo", "emails.high", **{**options, **fields})
    for args in calls:
        batch.add(args, {}, *json_arguments("celery.echo", args, {}))
    return batch


@pytest.mark.parametrize("eta", [None, 1_800_000_060.25])
@pytest.mark.parametrize(
    "fields", [{}, {"expires_at": 1_800_086_400.5, "headers": {"track": {"keep": 3600.0, "results": True}}}]
)
def test_rendered_frames_are_the_frames_py_amqp_writes(eta: float | None, fields: dict[str, Any]) -> None:
    batch = _batch([(1,), ("zürich ✓ 100% %s",), ({"deep": [1, None]},), ("x" * 5000,)], **fields)
    assert frames(batch, eta, CHANNEL_ID, FRAME_MAX) == _py_amqp_frames(batch, eta)


def test_a_body_larger_than_a_frame_is_left_to_py_amqp() -> None:
    batch = _batch([(1,), ("x" * 200_000,)])
    assert frames(batch, None, CHANNEL_ID, FRAME_MAX) is None
    assert frames(_batch([(1,)]), None, CHANNEL_ID, 4096) is not None
