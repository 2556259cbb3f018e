"""RabbitMQ: a batch taken by a consumer that lives for the one batch (its prefetch the batch size),
held unacknowledged on a channel of the taker's own, then acknowledged or rejected back.

One ``basic_get`` per message costs a round trip each; a consumer gets the whole batch in a few. A
taker that dies before it settles loses nothing: RabbitMQ delivers its held messages again, marked
redelivered. Each engine brings its own client library (py-amqp for Celery, pika for Dramatiq) as
an :class:`AmqpChannel`; the holding and settling logic is here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .held import Held

if TYPE_CHECKING:
    from ..engine import Taken

GET_WAIT = 1.0
"""Seconds a batch's consumer waits for the next message before the batch is taken as it is (the
count said more were ready, but another consumer got them first)."""

Delivery = tuple[int, bytes, bool]
"""A delivered message: its delivery tag, body and redelivered flag."""


class AmqpChannel(Protocol):
    """The calls a taker makes, on one client library's connection of its own."""

    @property
    def is_open(self) -> bool:
        """Whether the connection still works (when it broke, the broker took back what was held)."""

    def ready(self, name: str) -> int | None:
        """Messages ready in queue ``name``; ``None`` when there is no such queue."""

    def get(self, name: str, count: int, wait: float) -> list[Delivery]:
        """Up to ``count`` messages of ``name``, unacknowledged; stops early after ``wait`` seconds
        without one."""

    def ack(self, tag: int, *, multiple: bool) -> None:
        """Acknowledge the message ``tag`` (and every one held before it, with ``multiple``)."""

    def reject(self, tags: Sequence[int]) -> None:
        """Put the messages back in their queues, and wait until the broker has (so a count made
        next sees them)."""

    def close(self) -> None:
        """Close the connection; what is still held goes back to its queue."""


class AmqpTake:
    """An engine's take on RabbitMQ through the channel ``open_channel`` gives (opened on first use)."""

    def __init__(self, open_channel: Callable[[], AmqpChannel]) -> None:
        self._open_channel = open_channel
        self._channel: AmqpChannel | None = None
        self._held: set[int] = set()

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        """Up to ``limit`` messages of the queues ``names`` (pairs of the engine's queue name and the
        taskbridge queue its messages are reported under), oldest first."""
        if self._channel is not None and not self._channel.is_open:
            self.close()
        if self._channel is None:
            self._channel = self._open_channel()
        taken: list[Taken] = []
        for name, queue in names:
            while len(taken) < limit:
                ready = self._channel.ready(name)
                if not ready:
                    break
                got = self._channel.get(name, min(ready, limit - len(taken)), GET_WAIT)
                if not got:
                    break
                for tag, body, redelivered in got:
                    self._held.add(tag)
                    taken.append(Held(self, None, queue, tag, body, redelivered))
        return taken

    def ack_many(self, items: Sequence[Held[Any]]) -> None:
        """Acknowledge the items: one frame when they are all this taker holds up to the last of them."""
        self._settle(items, ack=True)

    def release_many(self, items: Sequence[Held[Any]]) -> None:
        """Put the items back in their queues."""
        self._settle(items, ack=False)

    def _settle(self, items: Sequence[Held[Any]], *, ack: bool) -> None:
        if not items or self._channel is None:
            return
        tags = {int(item.handle) for item in items}
        last = max(tags)
        if ack and all(tag in tags for tag in self._held if tag <= last):
            self._channel.ack(last, multiple=True)
        elif ack:
            for tag in sorted(tags):
                self._channel.ack(tag, multiple=False)
        else:
            self._channel.reject(sorted(tags))
        self._held -= tags

    def close(self) -> None:
        """Close the channel's connection (what is still held goes back to its queue)."""
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._channel.close()
        self._channel = None
        self._held.clear()


class PikaChannel:
    """:class:`AmqpChannel` on a pika ``BlockingConnection`` of its own."""

    def __init__(self, url: str) -> None:
        import pika

        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()
        self._probe: Any = None

    @property
    def is_open(self) -> bool:
        return bool(self._connection.is_open and self._channel.is_open)

    def ready(self, name: str) -> int | None:
        import pika.exceptions

        # A passive declare on a channel apart: its 404 closes that channel, not the holding one.
        if self._probe is None or not self._probe.is_open:
            self._probe = self._connection.channel()
        try:
            return int(self._probe.queue_declare(name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return None

    def get(self, name: str, count: int, wait: float) -> list[Delivery]:
        self._channel.basic_qos(prefetch_count=count)
        got: list[Delivery] = []
        for method, _properties, body in self._channel.consume(name, auto_ack=False, inactivity_timeout=wait):
            if method is None:
                break
            got.append((method.delivery_tag, body, bool(method.redelivered)))
            if len(got) >= count:
                break
        self._channel.cancel()
        return got

    def ack(self, tag: int, *, multiple: bool) -> None:
        self._channel.basic_ack(tag, multiple=multiple)

    def reject(self, tags: Sequence[int]) -> None:
        for tag in tags:
            self._channel.basic_nack(tag, requeue=True)
        self._channel.basic_qos(prefetch_count=1)  # a round trip: the rejects are done

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()


class PyAmqpChannel:
    """:class:`AmqpChannel` on a kombu ``Connection`` of its own (py-amqp underneath), connected here."""

    def __init__(self, kombu_connection: Any) -> None:
        self._kombu = kombu_connection
        self._kombu.connect()
        self._connection = kombu_connection.connection
        self._channel = self._connection.channel()
        self._probe: Any = None

    @property
    def is_open(self) -> bool:
        return bool(self._connection.connected and self._channel.is_open)

    def ready(self, name: str) -> int | None:
        from amqp.exceptions import NotFound

        if self._probe is None or not self._probe.is_open:
            self._probe = self._connection.channel()
        try:
            return int(self._probe.queue_declare(queue=name, passive=True).message_count)
        except NotFound:
            self._probe = None
            return None

    def get(self, name: str, count: int, wait: float) -> list[Delivery]:
        got: list[Delivery] = []

        def on_message(message: Any) -> None:
            body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
            got.append((message.delivery_tag, body, bool(message.delivery_info.get("redelivered"))))

        self._channel.basic_qos(0, count, False)
        consumer = self._channel.basic_consume(name, no_ack=False, callback=on_message)
        try:
            while len(got) < count:
                self._connection.drain_events(timeout=wait)
        except TimeoutError:
            pass
        self._channel.basic_cancel(consumer)  # a message delivered meanwhile is in ``got`` too
        return got

    def ack(self, tag: int, *, multiple: bool) -> None:
        self._channel.basic_ack(tag, multiple=multiple)

    def reject(self, tags: Sequence[int]) -> None:
        for tag in tags:
            self._channel.basic_reject(tag, requeue=True)
        self._channel.basic_qos(0, 1, False)  # a round trip: the rejects are done

    def close(self) -> None:
        self._kombu.release()
