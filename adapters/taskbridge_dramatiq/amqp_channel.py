"""The take's RabbitMQ channel on pika, the Dramatiq engine's client library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskbridge.taking.amqp import Delivery


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
