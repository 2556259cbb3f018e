"""Taking messages out of Celery's queues without running them, one small class per transport.

Where Celery's messages live is written here once per transport:
Redis: the list ``<global_keyprefix><queue>`` (kombu LPUSHes, workers pop from the right) and its
priority lists ``<queue>\\x06\\x16<n>``; RabbitMQ: the queue ``<queue>``; SQS: kombu's
``<namespace>-<queue>``. Dead letters are taskbridge's ``<queue>-dead`` (Celery keeps none of its own).
ETA messages wait in the same queue until a worker holds them, so they are taken like the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskbridge.engine import Taken
from taskbridge.taking.redis import RedisTaker, Source
from taskbridge.taking.sqs import SqsTaker

from .connection import ProcessConnection

if TYPE_CHECKING:
    from kombu import Connection

    from .broker import Broker

_KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def redis_keys(broker: Broker, name: str) -> list[str]:
    """The Redis lists that hold the messages of queue ``name``, highest priority first."""
    prefix = str(broker.transport_options.get("global_keyprefix", ""))
    return [prefix + name + (f"{_KOMBU_PRIORITY_SEPARATOR}{p}" if p else "") for p in _KOMBU_PRIORITY_STEPS]


class RedisTake:
    """Celery on Redis: kombu's lists, taken through :class:`~taskbridge.taking.redis.RedisTaker`."""

    def __init__(self, broker: Broker, namespace: str) -> None:
        import redis

        self._broker = broker
        self._taker = RedisTaker(redis.Redis.from_url(broker.url), namespace)

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        taken: list[Taken] = []
        for name, queue in names:
            for key in redis_keys(self._broker, name):
                if len(taken) < limit:
                    taken.extend(self._taker.take(Source(key, "right"), queue, limit - len(taken)))
        return taken

    def close(self) -> None:
        self._taker.close()
        self._taker.client.close()


@dataclass
class AmqpTaken:
    """A message got with ``basic_get`` and not acknowledged yet."""

    taker: AmqpTake
    queue: str
    delivery_tag: int
    body: bytes
    redelivered: bool

    def ack(self) -> None:
        self.taker.ack_many([self])

    def release(self) -> None:
        self.taker.release_many([self])


class AmqpTake:
    """Celery on RabbitMQ: ``basic_get`` without auto-ack on a channel of its own, ack or reject.

    The channel stays open while items are held; if this process dies, RabbitMQ delivers them again.
    """

    def __init__(self, connection: ProcessConnection) -> None:
        self._process_connection = connection
        self._connection: Connection | None = None
        self._channel: Any = None

    def _open(self) -> tuple[Connection, Any]:
        if self._connection is None:
            with self._process_connection.using() as shared:
                self._connection = shared.clone()
            self._connection.connect()
        if self._channel is None:
            self._channel = self._connection.channel()
        return self._connection, self._channel

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        connection, channel = self._open()
        taken: list[Taken] = []
        for name, queue in names:
            if not _exists(connection, name):
                continue
            while len(taken) < limit:
                message = channel.basic_get(queue=name, no_ack=False)
                if message is None:
                    break
                body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
                taken.append(
                    AmqpTaken(self, queue, message.delivery_tag, body, bool(message.delivery_info.get("redelivered")))
                )
        return taken

    def ack_many(self, items: Sequence[AmqpTaken]) -> None:
        for item in items:
            self._channel.basic_ack(item.delivery_tag)

    def release_many(self, items: Sequence[AmqpTaken]) -> None:
        for item in items:
            self._channel.basic_reject(item.delivery_tag, requeue=True)

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
        self._connection = self._channel = None


def _exists(connection: Connection, name: str) -> bool:
    """Whether the queue exists (a passive declare on a throwaway channel: its 404 closes that channel,
    not the one holding taken messages)."""
    from amqp.exceptions import NotFound

    channel = connection.channel()
    try:
        channel.queue_declare(queue=name, passive=True)
        return True
    except NotFound:
        return False
    finally:
        with contextlib.suppress(Exception):
            channel.close()


class SqsTake:
    """Celery on SQS: kombu's queue URLs and boto3 client, taken through :class:`SqsTaker`."""

    def __init__(self, connection: ProcessConnection) -> None:
        self._connection = connection
        self._takers: dict[int, SqsTaker] = {}

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        from kombu.transport.SQS.exceptions import DoesNotExistQueueException

        taken: list[Taken] = []
        for name, queue in names:
            with self._connection.using() as connection:
                channel: Any = connection.default_channel
                try:
                    url = channel._resolve_queue_url(name)
                except DoesNotExistQueueException:
                    continue
                client = channel.sqs(queue=channel.canonical_queue_name(name))
            taker = self._takers.setdefault(id(client), SqsTaker(client))
            taken.extend(taker.take(url, queue, limit - len(taken)))
            if len(taken) >= limit:
                break
        return taken

    def close(self) -> None:
        self._takers.clear()
