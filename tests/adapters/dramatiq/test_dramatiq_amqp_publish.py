"""The Dramatiq engine's RabbitMQ publishes on the real server: a message's frames written in one
piece (small messages) or as pika writes them (large ones) arrive whole and in order, confirmed."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from taskbridge_dramatiq import DramatiqEngine

from taskbridge import Envelope
from taskbridge.config import load_settings
from taskbridge.testing import Combination, unavailable_reason

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_single_publishes_of_any_size_arrive_whole_and_in_order() -> None:
    reason = unavailable_reason(Combination("dramatiq", AMQP))
    if reason:
        pytest.skip(reason)
    engine = DramatiqEngine(load_settings(engine="dramatiq", broker_url=AMQP, namespace=f"tbpub{uuid.uuid4().hex[:6]}"))
    queue = f"pub{uuid.uuid4().hex[:8]}"
    # Under one frame, just over the size written in one piece, and over pika's frame size (split).
    sizes = [1, 1_000, 129 * 1024, 300 * 1024, 10]
    envelopes = [Envelope(job="pub.job", queue=queue, args=["x" * size]) for size in sizes]
    broker: Any = engine.broker
    try:
        for envelope in envelopes:
            engine.publish([envelope])
        consumer = broker.consume(queue, prefetch=10, timeout=1000)
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < len(envelopes) and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                got.append(message)
                consumer.ack(message)
        next(consumer)
        consumer.close()
        assert [message.args[0] for message in got] == [envelope.encode() for envelope in envelopes]
    finally:
        broker.count_one(queue, purge=True)
        broker.channel.queue_delete(queue)
        engine.close()
