"""Dramatiq's RabbitmqBroker with guarded consumers, depth and purge; publishes are confirmed where
at-least-once needs it and fail with PublishError; a queue that exists with other arguments than the
layout's is used as it is (taskbridge.adopted_queues)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import pika
import pika.exceptions
from dramatiq import Message
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed

from taskbridge import adopted_queues, carrying
from taskbridge.envelope import EnvelopeBatch
from taskbridge.errors import PublishError
from taskbridge.layout import amqp_queue_arguments

from ..outage import SETTLED_TOO_LATE, connected, wait_before_reconnecting
from .amqp_frames import publish_frames
from .common import RoutesUnknownActors, message_bodies
from .guard import read_item

_BATCH_ATTEMPTS = 3
_DRAMATIQ_CONNECTION: property = vars(RabbitmqBroker)["connection"]
_PERSISTENT = pika.BasicProperties(delivery_mode=2)

T = TypeVar("T")


class _QuietExpectedRefusal(logging.Filter):
    """Drops pika's warning about a refusal this thread asked for on purpose and handles: the 404 of a
    passive declare, the 406 of a queue that exists with other arguments (adopted_queues warns)."""

    def __init__(self) -> None:
        super().__init__()
        self.active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.active, "on", False):
            return True
        message = record.getMessage()
        return "(404)" not in message and "(406)" not in message


_quiet = _QuietExpectedRefusal()


@contextmanager
def _expecting_refusals() -> Iterator[None]:
    pika_channel_log = logging.getLogger("pika.channel")
    if _quiet not in pika_channel_log.filters:
        pika_channel_log.addFilter(_quiet)
    previous = getattr(_quiet.active, "on", False)
    _quiet.active.on = True
    try:
        yield
    finally:
        _quiet.active.on = previous


@contextmanager
def _stored_or_raise(what: str) -> Iterator[None]:
    try:
        yield
    except (ConnectionClosed, pika.exceptions.AMQPError) as exc:
        raise PublishError(f"RabbitMQ did not store {what}: {exc}") from exc


def settle_frames(settled: Sequence[tuple[int, bool]], oldest_unsettled: int | None) -> list[tuple[int, bool, bool]]:
    """The ``(delivery tag, multiple, acknowledged)`` frames that settle ``settled`` (delivery tags,
    each acknowledged or rejected, in the order settled) on one channel, where ``oldest_unsettled``
    is the lowest tag delivered and not settled yet (None: every delivery is settled or in
    ``settled``). RabbitMQ numbers a channel's deliveries 1, 2, 3...: the acks below the oldest
    unsettled delivery go as one ``multiple`` ack of the highest of them; a batch with a reject
    keeps one frame per delivery, in order."""
    if not all(acknowledged for _, acknowledged in settled):
        return [(tag, False, acknowledged) for tag, acknowledged in settled]
    tags = sorted(tag for tag, _ in settled)
    below = [tag for tag in tags if oldest_unsettled is None or tag < oldest_unsettled]
    frames = [(below[-1], len(below) > 1, True)] if below else []
    return frames + [(tag, False, True) for tag in tags[len(below) :]]


class GuardedRabbitmqConsumer(_RabbitmqConsumer):  # type: ignore[misc]
    """Dramatiq's RabbitMQ consumer whose every delivery goes through :func:`guard.read_item`: no
    body is ever rejected to Dramatiq's ``.XQ`` or crashes the worker, whatever its bytes.

    Acknowledgements are sent as Dramatiq sends them, each after its message's outcome was stored,
    but those that finish while the connection's thread is busy go out together: one wake-up of that
    thread, one write, and where no older delivery is still running one ``multiple`` ack for all
    of them (:func:`settle_frames`), where Dramatiq pays a callback, a timer, a frame and a flush of
    the connection per message (about a third of the consumer thread's time in a drain).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settled: list[tuple[int, bool]] = []  # (delivery tag, acknowledged), in the order settled
        self._settled_lock = threading.Lock()
        self._reading = False

    def ack(self, message: Any) -> None:
        self._settle(message, acknowledged=True)

    def nack(self, message: Any) -> None:
        self._settle(message, acknowledged=False)

    def _settle(self, message: Any, *, acknowledged: bool) -> None:
        """Queue the message's ack (or its reject to the ``.XQ``) for the connection's thread; wake
        that thread only if nothing was queued yet (called from worker threads)."""
        tag = message._tag
        with self._settled_lock:  # a tag is in known_tags or queued here, never in between
            known = tag in self.known_tags
            if known:
                self.known_tags.discard(tag)
                self._settled.append((tag, acknowledged))
                if len(self._settled) > 1:
                    return  # a wake-up is on its way and will send this one too
        if not known:
            # Taken over a connection since lost: RabbitMQ delivers it again.
            self.logger.info(SETTLED_TOO_LATE)
            return
        try:
            self.connection.add_callback_threadsafe(self._send_settled)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            # The connection is gone, and with it these deliveries: RabbitMQ delivers them again.
            with self._settled_lock:
                self._settled.clear()
            raise ConnectionClosed(exc) from None

    def _send_settled(self) -> None:
        """In the connection's thread: send every queued ack and reject, then flush once."""
        with self._settled_lock:
            settled, self._settled = self._settled, []
            oldest_unsettled = min(self.known_tags, default=None)
        frames = settle_frames(settled, oldest_unsettled)
        # The async channel under pika's blocking one only buffers the frames; the blocking
        # channel's own call for the last one flushes them all.
        for index, (tag, multiple, acknowledged) in enumerate(frames):
            channel = self.channel if index == len(frames) - 1 else self.channel._impl
            if acknowledged:
                channel.basic_ack(tag, multiple=multiple)
            else:
                channel.basic_nack(tag, requeue=False)

    def __next__(self) -> _RabbitmqMessage | None:
        # Dramatiq decodes inside the same method that reads the delivery, so the read is repeated here.
        try:
            method, properties, body = next(self.iterator)
        except (AssertionError, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            if getattr(exc, "reply_code", None) == 404:
                self.broker.queues_pending.add(q_name(self.queue_name))
            raise ConnectionClosed(exc) from None
        if not self._reading:
            connected()  # this connection reads: a broker outage, if any, is over
            self._reading = True
        if method is None:
            return None
        message = read_item(
            body,
            self.queue_name,
            content_type=properties.content_type,
            headers=properties.headers,
            known_actors=self.broker.actors,
        )
        self.known_tags.add(method.delivery_tag)
        return _RabbitmqMessage(method.redelivered, method.delivery_tag, message)


class _QuietWhileHolding(logging.Filter):
    """Drops pika's warning about each refused declaration or publish while the thread retries storing
    an outcome: taskbridge.carrying logs the cause once, and a reminder now and then."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (carrying.is_holding(threading.get_ident()) and "Channel.Close" in record.getMessage())


_quiet_while_holding = _QuietWhileHolding()


class TaskbridgeRabbitmqBroker(RoutesUnknownActors, RabbitmqBroker):
    """RabbitmqBroker that can count and purge a queue together with its delay queue."""

    @property
    def consumer_class(self) -> type[GuardedRabbitmqConsumer]:
        return GuardedRabbitmqConsumer

    @property
    def connection(self) -> Any:
        """Dramatiq's connection of the current thread, writing each message in one piece."""
        connection = getattr(self.state, "connection", None)
        if connection is None:
            connection = _DRAMATIQ_CONNECTION.__get__(self)
            _write_messages_whole(connection)
        return connection

    @connection.deleter
    def connection(self) -> None:
        _DRAMATIQ_CONNECTION.__delete__(self)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        wait_before_reconnecting()
        return super().consume(queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        with _stored_or_raise(f"message {message.message_id} of job {message.actor_name!r}"):
            return super().enqueue(message, delay=delay)  # type: ignore[no-any-return]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pika_channel_log = logging.getLogger("pika.channel")
        if _quiet_while_holding not in pika_channel_log.filters:
            pika_channel_log.addFilter(_quiet_while_holding)

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        # The shared layout's arguments (today exactly Dramatiq's), so a Celery worker declares the
        # same queue the same way.
        return amqp_queue_arguments(queue_name)

    def _declare_queue(self, queue_name: str) -> Any:
        layout = self._build_queue_arguments(queue_name)
        declare = super()._declare_queue
        return self._declare_or_adopt(queue_name, layout, lambda: declare(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        layout = self._build_queue_arguments(queue_name)
        declare = super()._declare_dq_queue
        return self._declare_or_adopt(dq_name(queue_name), layout, lambda: declare(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        declare = super()._declare_xq_queue
        return self._declare_or_adopt(
            xq_name(queue_name), {"x-message-ttl": DEAD_MESSAGE_TTL}, lambda: declare(queue_name)
        )

    def _declare_or_adopt(self, name: str, layout: dict[str, Any], declare: Callable[[], Any]) -> Any:
        """``declare()`` the queue ``name`` as the layout says; if it exists with other arguments,
        take it as it is (a passive declare on a new channel: RabbitMQ closed the refused one)."""
        with _expecting_refusals():
            if not adopted_queues.is_adopted(name):
                try:
                    return declare()
                except pika.exceptions.ChannelClosedByBroker as exc:
                    del self.channel
                    if exc.reply_code != adopted_queues.PRECONDITION_FAILED:
                        raise
                    adopted_queues.adopt(name, layout, exc.reply_text)
            try:
                return self.channel.queue_declare(queue=name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                del self.channel
                if exc.reply_code != 404:
                    raise
                adopted_queues.forget(name)  # deleted since: the layout's declaration applies again
        return declare()

    def settle(self, consumed: Sequence[str], written: Sequence[str]) -> None:
        """Declare the queues a worker consumes, and those of ``written`` that exist already (its
        dead-letter queues), before its processes are forked: a queue that exists with other
        arguments is adopted, and warned about, once here rather than once in each process."""
        for name in consumed:
            self.declare_queue(name, ensure=True)
        for name in written:
            try:
                if self._exists(name):
                    self.declare_queue(name, ensure=True)
            except (ConnectionClosed, pika.exceptions.AMQPError) as exc:
                # Writing to it will tell, and hold the outcome while it cannot (taskbridge.carrying).
                logging.getLogger("taskbridge.dramatiq").debug("could not declare queue %r at start: %s", name, exc)

    def _exists(self, name: str) -> bool:
        with _expecting_refusals():
            try:
                self.channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                del self.channel
                if exc.reply_code != 404:
                    raise
                return False
        return True

    def publish(self, messages: Sequence[Message[Any]], delay_ms: int | None) -> None:
        if len(messages) == 1 or not self.confirm_delivery:
            for message in messages:
                self.enqueue(message, delay=delay_ms)
            return
        # Confirming each message of a batch costs a round trip each (about 10x slower than unconfirmed
        # publishes here); one AMQP transaction per batch gives the same guarantee for the whole batch.
        sent: list[Message[Any]] = []

        def send(channel: Any) -> None:
            sent[:] = self._publish_messages(channel, messages, delay_ms)

        self._send_batch(send, len(messages), transaction=True)
        for message in sent:
            self.emit_after("enqueue", message, delay_ms)

    def publish_batch(self, batch: EnvelopeBatch, delay_ms: int | None) -> None:
        if self.middleware:  # the enqueue hooks need Message objects
            from ..actors import to_message

            self.publish([to_message(envelope) for envelope in batch], delay_ms)
            return
        queue, routing_key, options = batch.queue, batch.queue, "{}"
        if delay_ms is not None:
            routing_key, options = dq_name(queue), f'{{"eta":{current_millis() + delay_ms}}}'
        bodies = message_bodies(batch, routing_key, [options] * len(batch))

        def send(channel: Any) -> None:
            self.declare_queue(queue, ensure=True)
            if self.confirm_delivery and _write_frames(channel, routing_key, bodies):
                return
            publish = _buffered(channel) if self.confirm_delivery else channel.basic_publish
            for body in bodies:
                publish(exchange="", routing_key=routing_key, body=body, properties=_PERSISTENT)

        self._send_batch(send, len(batch), transaction=self.confirm_delivery)

    def _send_batch(self, send: Callable[[Any], None], count: int, *, transaction: bool) -> None:
        """``send(channel)`` a batch, in one AMQP transaction when it must be confirmed; on a
        connection error the whole batch is sent again on a new connection (at least once)."""
        for attempt in range(1, _BATCH_ATTEMPTS + 1):
            try:
                if not transaction:
                    send(self.channel)
                    return
                channel = getattr(self.state, "tx_channel", None)
                if channel is None or not channel.is_open:
                    channel = self.state.tx_channel = self.connection.channel()
                    channel.tx_select()
                send(channel)
                channel.tx_commit()
                return
            except (ConnectionClosed, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                self.state.tx_channel = None
                del self.connection
                if attempt == _BATCH_ATTEMPTS:
                    raise PublishError(f"RabbitMQ did not store a batch of {count} messages: {exc}") from exc

    def _publish_messages(
        self, channel: Any, messages: Sequence[Message[Any]], delay_ms: int | None
    ) -> list[Message[Any]]:
        sent = []
        publish = _buffered(channel)
        for message in messages:
            self.declare_queue(message.queue_name, ensure=True)
            if delay_ms is not None:
                message = message.copy(
                    queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay_ms}
                )
            self.emit_before("enqueue", message, delay_ms)
            publish(exchange="", routing_key=message.queue_name, body=message.encode(), properties=_PERSISTENT)
            sent.append(message)
        return sent

    def _counts(self, queue: str, purge: bool) -> dict[str, int]:
        with _expecting_refusals():
            return {name: self._count(name, purge) for name in (queue, dq_name(queue))}

    def count_one(self, name: str, *, purge: bool = False) -> int:
        """Messages in the one queue ``name`` (0 if it does not exist); with ``purge``, drop them."""
        with _expecting_refusals():
            return self._count(name, purge)

    def _count(self, name: str, purge: bool) -> int:
        if purge:
            return self._on_queue(lambda: int(self.channel.queue_purge(name).method.message_count), 0)
        return self._on_queue(lambda: int(self.channel.queue_declare(name, passive=True).method.message_count), 0)

    def _on_queue(self, call: Callable[[], T], missing: T) -> T:
        """``call()`` on this thread's channel; ``missing`` when the queue it names does not exist
        (RabbitMQ closes the channel then), which holds nothing. Any other fault drops the channel
        or connection for the next call to open anew."""
        try:
            return call()
        except pika.exceptions.ChannelClosedByBroker as exc:
            del self.channel
            if exc.reply_code != 404:
                raise
            return missing
        except pika.exceptions.AMQPError:
            del self.connection
            raise

    def queue_depth(self, queue: str) -> int:
        return sum(self._counts(queue, purge=False).values())

    def purge_queue(self, queue: str) -> int:
        return sum(self._counts(queue, purge=True).values())

    def holdings(self, queue: str) -> dict[str, int]:
        return self._counts(queue, purge=False)

    def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` with its delay and Dramatiq dead-letter queues; a later enqueue declares
        them again."""
        with _expecting_refusals():
            for name in (queue, dq_name(queue), xq_name(queue)):
                self._on_queue(partial(self._delete_one, name), None)
        self.queues_pending.add(q_name(queue))

    def _delete_one(self, name: str) -> None:
        self.channel.queue_delete(name)

    def reap(self, queue: str) -> None:
        """RabbitMQ delivers a dead consumer's messages again by itself."""

    def requeue_now(self, consumer: Any, message: Any) -> None:
        """Nothing to do: RabbitMQ delivers unacknowledged messages again when the process's connection closes."""


_WHOLE_UP_TO = 128 * 1024
"""Messages up to this size (their frames together) are written in one piece."""


def _write_messages_whole(connection: Any) -> None:
    """Have ``connection`` hand the frames of a message (method, header, body) to its socket as one
    piece: pika writes each frame in a ``send`` call of its own, three per publish, the costliest
    part of a confirmed publish after the wait for the broker."""
    impl = connection._impl
    output: Callable[[Sequence[bytes]], None] = impl._output_marshaled_frames

    def output_whole(frames: Sequence[bytes]) -> None:
        if len(frames) > 1 and sum(map(len, frames)) <= _WHOLE_UP_TO:
            frames = [b"".join(frames)]
        output(frames)

    impl._output_marshaled_frames = output_whole


def _write_frames(channel: Any, routing_key: str, bodies: Sequence[bytes]) -> bool:
    """Hand the frames publishing ``bodies`` on a transaction channel to its connection as one piece
    (the commit sends them); False, having written nothing, when pika must split a body."""
    impl = channel._impl
    connection = impl.connection
    data = publish_frames(impl.channel_number, routing_key, bodies, _PERSISTENT, connection._body_max_length)
    if data is None:
        return False
    connection._output_marshaled_frames([data])
    return True


def _buffered(channel: Any) -> Callable[..., None]:
    """``basic_publish`` of a transaction channel that only buffers the frames: the commit sends the
    whole batch and waits once (pika's own flushes the socket after every message)."""
    impl = channel._impl
    publish: Callable[..., None] = impl.basic_publish
    return publish
