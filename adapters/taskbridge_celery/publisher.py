"""Publishing envelopes as Celery messages: one producer per process, batched per call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from kombu import Connection, Producer

from taskbridge import Envelope

from .app import queue
from .connection import ProcessConnection
from .wire import CONTENT_ENCODING, CONTENT_TYPE, message_body, message_headers, new_task_id

BATCH_OPERATIONS = 1000
"""Redis commands buffered in one pipeline before it is sent."""


class Publisher:
    """Redis and RabbitMQ: kombu's producer; on Redis a batch goes out as one pipeline.

    On RabbitMQ with ``transactions``, a batch of several messages (and, with ``confirm``, every
    publish) goes out in one AMQP transaction: when the commit returns, the broker has stored them
    all, for one round trip per batch instead of one per message with publisher confirms.
    """

    def __init__(self, connection: ProcessConnection, *, declare_queues: bool, confirm: bool = False) -> None:
        self._connection = connection
        self._declare_queues = declare_queues
        self._transactions = declare_queues
        self._confirm = confirm
        self._tx_channel: Any = None

    def publish(self, envelopes: Sequence[Envelope], delay: float) -> None:
        """Send ``envelopes``; each is delivered ``delay`` seconds from now (Celery's ETA)."""
        if not envelopes:
            return
        eta = time.time() + delay if delay > 0 else None
        if self._transactions and (self._confirm or len(envelopes) > 1):
            self._connection.call(lambda connection: self._send_in_transaction(connection, envelopes, eta))
            return
        self._connection.call(lambda connection: self._send(connection, envelopes, eta))

    def _send_in_transaction(self, connection: Connection, envelopes: Sequence[Envelope], eta: float | None) -> None:
        channel = self._tx_channel
        if channel is None or channel.connection is None or getattr(channel, "_owner", None) is not connection:
            channel = connection.channel()
            channel.tx_select()
            channel._owner = connection
            self._tx_channel = channel
        try:
            producer = Producer(channel)
            for name in dict.fromkeys(envelope.queue for envelope in envelopes):
                producer.maybe_declare(queue(name))
            # kombu's Producer.publish costs more than the AMQP write itself; inside a transaction the
            # queues are declared above, so each message goes straight to the channel.
            for envelope in envelopes:
                task_id = new_task_id()
                message = channel.prepare_message(
                    message_body(envelope.encode()),
                    0,
                    CONTENT_TYPE,
                    CONTENT_ENCODING,
                    message_headers(envelope, task_id, eta),
                    {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2},
                )
                channel.basic_publish(message, exchange="", routing_key=envelope.queue)
            channel.tx_commit()
        except Exception:
            self._tx_channel = None
            raise

    def _send(
        self, connection: Connection, envelopes: Sequence[Envelope], eta: float | None, channel: Any = None
    ) -> None:
        producer = Producer(channel or connection.default_channel)
        # RabbitMQ drops a message routed to a queue that does not exist yet (a fresh dead-letter
        # queue, or a queue no worker consumed so far): declare it first, once per channel.
        with _batch(producer):
            for envelope in envelopes:
                task_id = new_task_id()
                producer.publish(
                    message_body(envelope.encode()),
                    exchange="",
                    routing_key=envelope.queue,
                    headers=message_headers(envelope, task_id, eta),
                    content_type=CONTENT_TYPE,
                    content_encoding=CONTENT_ENCODING,
                    correlation_id=task_id,
                    reply_to="",
                    delivery_mode=2,
                    declare=[queue(envelope.queue)] if self._declare_queues else None,
                )


def _batch(producer: Producer) -> Any:
    """kombu >= 5.7 pipelines a batch on Redis (other transports publish at once); older: no batch."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=BATCH_OPERATIONS) if batch is not None else contextlib.nullcontext()
