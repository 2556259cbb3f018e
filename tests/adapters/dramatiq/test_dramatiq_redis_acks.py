"""The Dramatiq engine's Redis consumer on the real server: acknowledgements made by many worker
threads at once, sent in groups, all reach Redis (the ids leave the worker's acks set and their
items are deleted, so nothing is delivered again), and a group whose call failed is sent again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.errors import ConnectionClosed
from taskbridge_dramatiq.actors import to_message
from taskbridge_dramatiq.brokers import build_broker
from taskbridge_dramatiq.settings import DramatiqSettings

from taskbridge import Envelope
from taskbridge.config import load_settings
from taskbridge.testing import Combination, unavailable_reason
from taskbridge.testing.proxy import TcpProxy

REDIS = "redis://127.0.0.1:6379/0"
COUNT = 60


def _broker(url: str) -> Any:
    config = load_settings(engine="dramatiq", broker_url=url, namespace=f"tbacks{uuid.uuid4().hex[:8]}")
    return build_broker(config, DramatiqSettings(), worker=True, middleware=[])


@pytest.fixture
def redis_broker() -> Iterator[Any]:
    reason = unavailable_reason(Combination("dramatiq", REDIS))
    if reason:
        pytest.skip(reason)
    broker = _broker(REDIS)
    try:
        yield broker
    finally:
        for key in broker.client.scan_iter(f"{broker.namespace}:*"):
            broker.client.delete(key)
        broker.close()


def _fill(broker: Any, queue: str) -> None:
    envelopes = [Envelope(job="acks.job", queue=queue, args=[index]) for index in range(COUNT)]
    broker.publish([to_message(envelope) for envelope in envelopes], None)


def _read(consumer: Any, count: int) -> list[Any]:
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    while len(messages) < count and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            messages.append(message)
    assert len(messages) == count, f"only {len(messages)} of {count} messages were delivered"
    return messages


def _unacknowledged(broker: Any, queue: str, client: Any = None) -> int:
    """Ids ``broker``'s worker fetched from ``queue`` and has not acknowledged, read through ``client``."""
    client = client or broker.client
    return int(client.scard(f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}"))


def _items(broker: Any, queue: str, client: Any = None) -> int:
    """Items of ``queue`` still stored (an acknowledged message's item is deleted)."""
    return int((client or broker.client).hlen(f"{broker.namespace}:{queue}.msgs"))


def test_acks_from_many_threads_at_once_all_reach_redis(redis_broker: Any) -> None:
    queue = f"acks{uuid.uuid4().hex[:8]}"
    _fill(redis_broker, queue)
    consumer = redis_broker.consume(queue, prefetch=COUNT, timeout=100)
    messages = _read(consumer, COUNT)
    assert _unacknowledged(redis_broker, queue) == COUNT

    start = threading.Barrier(8)

    def ack(part: list[Any]) -> None:
        start.wait()
        for message in part:
            consumer.ack(message)

    threads = [threading.Thread(target=ack, args=(messages[index::8],)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert _unacknowledged(redis_broker, queue) == 0
    assert _items(redis_broker, queue) == 0
    assert consumer.outstanding_message_count == 0


def test_acks_whose_call_failed_are_sent_with_the_next_one(redis_broker: Any) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    broker = _broker(proxy.url(REDIS))
    queue = f"acks{uuid.uuid4().hex[:8]}"
    try:
        _fill(broker, queue)
        consumer = broker.consume(queue, prefetch=COUNT, timeout=100)
        messages = _read(consumer, COUNT)
        consumer.ack(messages[0])
        proxy.cut()
        with pytest.raises(ConnectionClosed):
            consumer.ack(messages[1])
        with pytest.raises(ConnectionClosed):
            consumer.ack(messages[2])
        proxy.restore()
        # Dramatiq retries an ack that raised: the retry sends every id still waiting.
        consumer.ack(messages[2])
        for message in messages[3:]:
            consumer.ack(message)

        assert _unacknowledged(broker, queue, redis_broker.client) == 0
        assert _items(broker, queue, redis_broker.client) == 0
        assert consumer.outstanding_message_count == 0
    finally:
        for key in redis_broker.client.scan_iter(f"{broker.namespace}:*"):
            redis_broker.client.delete(key)
        broker.close()
        proxy.close()
