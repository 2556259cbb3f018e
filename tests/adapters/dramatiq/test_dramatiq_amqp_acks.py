"""The Dramatiq engine's RabbitMQ consumer on the real server: acknowledgements and rejects made by
worker threads, several at once while the consumer's thread is busy or waiting, all reach RabbitMQ
(none is lost or sent twice), so nothing acknowledged is ever delivered again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.common import xq_name
from taskbridge_dramatiq import DramatiqEngine
from taskbridge_dramatiq.brokers import build_broker
from taskbridge_dramatiq.brokers.rabbitmq import settle_frames
from taskbridge_dramatiq.settings import DramatiqSettings

from taskbridge import Envelope
from taskbridge.config import load_settings
from taskbridge.testing import Combination, unavailable_reason

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
COUNT = 40


@pytest.fixture
def rabbit() -> Iterator[tuple[Any, str]]:
    """A worker broker and a fresh queue holding ``COUNT`` messages."""
    reason = unavailable_reason(Combination("dramatiq", AMQP))
    if reason:
        pytest.skip(reason)
    config = load_settings(engine="dramatiq", broker_url=AMQP, namespace=f"tbacks{uuid.uuid4().hex[:8]}")
    engine = DramatiqEngine(config)
    queue = f"acks{uuid.uuid4().hex[:8]}"
    broker: Any = build_broker(config, DramatiqSettings(), worker=True, middleware=[])
    broker.declare_queue(queue, ensure=True)
    engine.publish([Envelope(job="acks.job", queue=queue, args=[index]) for index in range(COUNT)])
    try:
        yield broker, queue
    finally:
        for name in (queue, xq_name(queue)):
            broker.count_one(name, purge=True)
            broker.channel.queue_delete(name)
        broker.close()
        engine.close()


def _read(consumer: Any, count: int) -> list[Any]:
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    while len(messages) < count and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            messages.append(message)
    assert len(messages) == count, f"only {len(messages)} of {count} messages were delivered"
    return messages


def _settle_from_threads(consumer: Any, messages: list[Any], rejected: set[int]) -> list[threading.Thread]:
    """Acknowledge (or reject, by index) the messages from four threads at once, as worker threads do."""

    def settle(part: list[tuple[int, Any]]) -> None:
        for index, message in part:
            if index in rejected:
                consumer.nack(message)
            else:
                consumer.ack(message)

    indexed = list(enumerate(messages))
    threads = [threading.Thread(target=settle, args=(indexed[start::4],)) for start in range(4)]
    for thread in threads:
        thread.start()
    return threads


def _depth_after_close(broker: Any, queue: str) -> int:
    """What the queue holds once the consumer's connection is closed: RabbitMQ then delivers every
    unacknowledged message again, so only acknowledged and rejected ones are gone. The requeue is
    the broker's, after the close: the queue is watched for a few seconds for it."""
    deadline = time.monotonic() + 3
    while True:
        depth = int(broker.count_one(queue))
        if depth or time.monotonic() > deadline:
            return depth
        time.sleep(0.2)


def test_acks_made_while_the_consumer_waits_all_reach_rabbitmq(rabbit: tuple[Any, str]) -> None:
    broker, queue = rabbit
    consumer = broker.consume(queue, prefetch=COUNT, timeout=1000)
    messages = _read(consumer, COUNT)
    threads = _settle_from_threads(consumer, messages, rejected={3, 17})
    # The consumer's thread goes on reading meanwhile (nothing is left to deliver): the acks go out from there.
    while any(thread.is_alive() for thread in threads):
        next(consumer)
    for _ in range(3):
        next(consumer)
    consumer.close()

    assert _depth_after_close(broker, queue) == 0
    assert broker.count_one(xq_name(queue)) == 2  # the rejected ones went to Dramatiq's dead letters


def test_acks_queued_while_the_consumer_is_busy_go_out_on_its_next_read(
    rabbit: tuple[Any, str],
) -> None:
    broker, queue = rabbit
    consumer = broker.consume(queue, prefetch=COUNT, timeout=1000)
    messages = _read(consumer, COUNT)
    # The consumer's thread does not read while the acks are made: they all wait for it.
    for thread in _settle_from_threads(consumer, messages, rejected=set()):
        thread.join()
    next(consumer)
    consumer.close()

    assert _depth_after_close(broker, queue) == 0
    assert broker.count_one(xq_name(queue)) == 0


def test_a_message_acknowledged_twice_is_sent_once(rabbit: tuple[Any, str]) -> None:
    """A second ack of one delivery (Dramatiq retries an ack after a connection error) would make
    RabbitMQ close the channel; it is dropped with a warning instead, and later acks still go out."""
    broker, queue = rabbit
    consumer = broker.consume(queue, prefetch=COUNT, timeout=1000)
    messages = _read(consumer, COUNT)
    consumer.ack(messages[0])
    consumer.ack(messages[0])
    for message in messages[1:]:
        consumer.ack(message)
    next(consumer)
    consumer.close()

    assert _depth_after_close(broker, queue) == 0


def test_a_delivery_still_running_is_not_acknowledged_with_later_ones(rabbit: tuple[Any, str]) -> None:
    """Later deliveries finish first and go as one ``multiple`` ack: it must not cover the older
    ones still running, which RabbitMQ delivers again when the connection closes."""
    broker, queue = rabbit
    consumer = broker.consume(queue, prefetch=COUNT, timeout=1000)
    messages = _read(consumer, COUNT)
    running = {messages[0].message_id, messages[12].message_id}
    finished = [message for message in messages if message.message_id not in running]
    for thread in _settle_from_threads(consumer, finished, rejected=set()):
        thread.join()
    next(consumer)
    consumer.close()

    assert _depth_after_close(broker, queue) == 2
    again = broker.consume(queue, prefetch=COUNT, timeout=1000)
    try:
        assert {message.message_id for message in _read(again, 2)} == running
    finally:
        again.close()


@pytest.mark.parametrize(
    ("settled", "oldest_unsettled", "frames"),
    [
        ([(3, True), (1, True), (2, True)], None, [(3, True, True)]),
        ([(4, True)], None, [(4, False, True)]),
        ([(5, True), (2, True), (7, True)], 4, [(2, False, True), (5, False, True), (7, False, True)]),
        ([(5, True), (2, True), (3, True), (7, True)], 6, [(5, True, True), (7, False, True)]),
        ([(1, True), (2, False), (3, True)], None, [(1, False, True), (2, False, False), (3, False, True)]),
        ([(9, True), (8, True)], 1, [(8, False, True), (9, False, True)]),
    ],
)
def test_acks_below_the_oldest_unsettled_delivery_go_as_one(
    settled: list[tuple[int, bool]], oldest_unsettled: int | None, frames: list[tuple[int, bool, bool]]
) -> None:
    assert settle_frames(settled, oldest_unsettled) == frames
