"""Publishing envelopes as Celery messages: one producer per process, batched per call."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from amqp import spec
from kombu import Connection, Producer

from taskbridge import Envelope
from taskbridge.engine import already_stored
from taskbridge.envelope import EnvelopeBatch, envelope_texts

from . import amqp_batch, redis_batch
from .amqp_messages import CeleryProperties, PreparedMessage
from .app import queue
from .connection import ProcessConnection
from .wire import CONTENT_ENCODING, CONTENT_TYPE, message_body, message_headers, task_id_for

BATCH_OPERATIONS = 1000
"""Redis commands buffered in one pipeline before it is sent."""


class Publisher:
    """Redis and RabbitMQ: kombu's producer for one message; on Redis (with ``redis_batches``) a
    batch goes out as rendered pipelines, on RabbitMQ (with ``transactions``) as one AMQP transaction."""

    def __init__(
        self,
        connection: ProcessConnection,
        *,
        declare_queues: bool,
        transactions: bool = False,
        redis_batches: bool = False,
    ) -> None:
        self._connection = connection
        self._redis_batches = redis_batches
        self._declare_queues = declare_queues
        self._transactions = transactions
        self._tx: tuple[Connection, Any] | None = None
        self._tx_declared: set[str] = set()
        self._properties = CeleryProperties()

    def forget(self, name: str) -> None:
        """Queue ``name`` was deleted: declare it again before the next batch sent to it."""
        self._tx_declared.discard(name)

    def publish(self, envelopes: Sequence[Envelope], delay: float) -> None:
        """Send ``envelopes``; each is delivered ``delay`` seconds from now (Celery's ETA)."""
        if not envelopes:
            return
        eta = time.time() + delay if delay > 0 else None
        self._connection.call(lambda connection: self._send(connection, envelopes, eta))

    def start(self, envelopes: Sequence[Envelope], delay: float) -> Callable[[], None]:
        """:meth:`publish` that, for a batch on Redis, returns once it is written; the function
        returned waits until Redis stored it."""
        if not (self._redis_batches and len(envelopes) > 1):
            self.publish(envelopes, delay)
            return already_stored
        eta = time.time() + delay if delay > 0 else None
        # InFlight writes once more on a new Redis connection; this call on a new kombu connection.
        written = self._connection.call(
            lambda connection: redis_batch.start_push(connection.default_channel, envelopes, eta)
        )

        def stored() -> None:
            written.wait()

        return stored

    def _send(self, connection: Connection, envelopes: Sequence[Envelope], eta: float | None) -> None:
        if self._transactions and len(envelopes) > 1:
            channel = self._tx_channel(connection)
            self._publish_plain(channel, envelopes, eta)
            channel.tx_commit()  # returns once the broker stored the whole batch
            return
        if self._redis_batches and len(envelopes) > 1:
            redis_batch.start_push(connection.default_channel, envelopes, eta).wait()
            return
        producer = Producer(connection.default_channel)
        with _batch(producer):
            self._publish_all(producer, envelopes, eta)

    def _publish_all(self, producer: Producer, envelopes: Sequence[Envelope], eta: float | None) -> None:
        # RabbitMQ drops a message routed to a queue that does not exist yet (a fresh dead-letter
        # queue, or a queue no worker consumed so far): declare it first, once per channel.
        for envelope in envelopes:
            task_id = task_id_for(envelope.id)
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

    def _publish_plain(self, channel: Any, envelopes: Sequence[Envelope], eta: float | None) -> None:
        """What ``_publish_all`` sends, straight on a py-amqp channel: a kombu producer costs more per
        message than the message itself, and so do py-amqp's properties (:mod:`.amqp_messages`)."""
        if self._declare_queues:
            names = {envelopes.queue} if isinstance(envelopes, EnvelopeBatch) else {e.queue for e in envelopes}
            for name in sorted(names - self._tx_declared):
                queue(name)(channel).declare()
                self._tx_declared.add(name)
        _handle_waiting_frames(channel.connection)
        if isinstance(envelopes, EnvelopeBatch):
            rendered = amqp_batch.frames(envelopes, eta, channel.channel_id, channel.connection.frame_max)
            if rendered is not None:
                channel.connection.transport.write(rendered)
                return
        properties = self._properties
        with _corked(channel.connection):
            for envelope, text in zip(envelopes, envelope_texts(envelopes), strict=True):
                task_id = task_id_for(envelope.id)
                message = PreparedMessage(message_body(text), properties.encode(envelope, task_id, eta))
                # basic_publish without its per-message look for waiting frames (done once above).
                channel.send_method(spec.Basic.Publish, "Bssbb", (0, "", envelope.queue, False, False), message)

    def _tx_channel(self, connection: Connection) -> Any:
        """This connection's channel in transaction mode: a confirm per message costs a round trip
        each; one commit per batch gives the same guarantee for the whole batch in one."""
        if self._tx is not None and self._tx[0] is connection and self._tx[1].is_open:
            return self._tx[1]
        channel: Any = connection.channel()
        # py-amqp makes every channel of a confirming connection wait for a confirm on each publish
        # (and switch to confirm mode, which a transaction channel cannot): publish plainly here.
        channel.basic_publish = channel._basic_publish
        channel.tx_select()
        self._tx = (connection, channel)
        self._tx_declared = set()
        return channel


def _handle_waiting_frames(connection: Any) -> None:
    """What py-amqp's ``basic_publish`` does before every message: handle frames the broker sent
    meanwhile (``connection.blocked`` among them), without waiting for any."""
    if connection.client_properties.get("capabilities", {}).get("connection.blocked", False):
        with contextlib.suppress(socket.timeout):
            connection.drain_events(timeout=0)


@contextlib.contextmanager
def _corked(connection: Any) -> Iterator[None]:
    """Frames written in the block go out in one send at its end (py-amqp sends each message on its
    own); an error in the block sends none of them, so the connection never carries half a message."""
    transport: Any = getattr(connection, "transport", None)
    send = getattr(transport, "_write", None)
    if send is None:  # another transport class than py-amqp's own: send as it does
        yield
        return
    frames: list[bytes] = []
    transport._write = lambda data: frames.append(bytes(data))  # py-amqp reuses the buffer it hands over
    try:
        yield
    finally:
        transport._write = send
    send(b"".join(frames))


def _batch(producer: Producer) -> Any:
    """kombu >= 5.7 pipelines a batch on Redis (other transports publish at once); older: no batch."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=BATCH_OPERATIONS) if batch is not None else contextlib.nullcontext()
