"""The take's RabbitMQ channel on py-amqp (through kombu), the Celery engine's client library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from taskbridge.taking.amqp import Delivery

RECEIVE_CHUNK = 16 * 1024
"""Bytes asked of the socket per read: py-amqp asks for exactly what it needs next, three reads
for each message (frame header, payload, frame end); a batch comes in a few reads this way."""
CONTENT_HEADER = 2
"""AMQP frame type of a message's content header: class, weight, body size, then its properties."""
_NO_PROPERTIES = b"\x00\x00"


class PyAmqpChannel:
    """:class:`AmqpChannel` on a kombu ``Connection`` of its own (py-amqp underneath), connected here."""

    def __init__(self, kombu_connection: Any) -> None:
        self._kombu = kombu_connection
        self._kombu.connect()
        self._connection = kombu_connection.connection
        _read_lean(self._connection)
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


def _read_lean(connection: Any) -> None:
    """Make py-amqp read a take's deliveries with less work each: bigger socket reads (py-amqp keeps
    what is left over for the next frame), and the properties of a delivered message not decoded
    (a take keeps only its body, delivery tag and redelivered flag, and Celery's headers are a table
    of sixteen items)."""
    transport = connection.transport
    receive = getattr(transport, "_quick_recv", None)
    if receive is not None:
        transport._quick_recv = lambda wanted: receive(max(wanted, RECEIVE_CHUNK))
    connection.on_inbound_frame = _without_properties(connection.on_inbound_frame)


def _without_properties(on_frame: Callable[[tuple[int, int, Any]], Any]) -> Callable[[tuple[int, int, Any]], Any]:
    def on_body_only_frame(frame: tuple[int, int, Any]) -> Any:
        frame_type, channel, payload = frame
        if frame_type == CONTENT_HEADER:
            frame = (frame_type, channel, bytes(payload[:12]) + _NO_PROPERTIES)
        return on_frame(frame)

    return on_body_only_frame
