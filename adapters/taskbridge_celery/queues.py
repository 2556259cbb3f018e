"""Depth and purge on Redis (list length) and RabbitMQ (passive queue declare)."""

from __future__ import annotations

from amqp.exceptions import NotFound
from kombu import Connection
from kombu.exceptions import ChannelError

from .connection import ProcessConnection

_MISSING = (NotFound, ChannelError)


class BrokerQueues:
    """Counts and purges queues through kombu's channel; a queue that does not exist holds 0."""

    def __init__(self, connection: ProcessConnection, *, scheme: str) -> None:
        self._connection = connection
        # A failed passive declare closes a RabbitMQ channel: use a throwaway one there.
        self._own_channel = scheme == "amqp"
        # kombu's Redis passive declare asks EXISTS of the key without its global_keyprefix, so it
        # never finds a prefixed queue; a plain declare there creates nothing and returns the size.
        self._passive = scheme != "redis"

    def depth(self, name: str) -> int:
        def count(connection: Connection) -> int:
            if self._own_channel:
                with connection.channel() as channel:
                    return _declared_size(channel, name, self._passive)
            return _declared_size(connection.default_channel, name, self._passive)

        return self._connection.call(count)

    def purge(self, name: str) -> int:
        def purge(connection: Connection) -> int:
            if self._own_channel:
                with connection.channel() as channel:
                    return _purged(channel, name)
            return _purged(connection.default_channel, name)

        return self._connection.call(purge)


def _declared_size(channel: object, name: str, passive: bool) -> int:
    try:
        return int(channel.queue_declare(queue=name, passive=passive).message_count)  # type: ignore[attr-defined]
    except _MISSING:
        return 0


def _purged(channel: object, name: str) -> int:
    try:
        return int(channel.queue_purge(queue=name) or 0)  # type: ignore[attr-defined]
    except _MISSING:
        return 0
