"""Taking messages out of Dramatiq's queues without running them, one small class per transport.

Where Dramatiq's messages live is written here once per transport (``q`` a taskbridge queue):
Redis: ids in the lists ``<ns>:q`` and ``<ns>:q.DQ`` (workers pop from the left), messages in the
hashes ``<ns>:q.msgs`` and ``<ns>:q.DQ.msgs``; dead letters in ``<ns>:q-dead`` and Dramatiq's own
sorted set ``<ns>:q.XQ`` (messages in ``.XQ.msgs``). RabbitMQ: ``q`` and ``q.DQ``; dead letters
``q-dead`` and ``q.XQ``. SQS: dramatiq-sqs's ``<ns>_q`` and ``<ns>_q-dead`` (delays are SQS
DelaySeconds, so there is no delay queue, and no ``.XQ``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dramatiq.common import dq_name, xq_name

from taskbridge.engine import Taken
from taskbridge.taking.redis import RedisTaker, Source
from taskbridge.taking.sqs import SqsTaker


def queue_names(queue: str, dead_queue: str, *, dead_letters: bool) -> list[str]:
    """The Dramatiq queues holding ``queue``'s waiting messages, or its dead letters."""
    return [dead_queue, xq_name(queue)] if dead_letters else [queue, dq_name(queue)]


def redis_sources(namespace: str, names: Sequence[str]) -> list[Source]:
    """Dramatiq's Redis keys for those queues: ``.XQ`` is a sorted set, the others lists of ids."""
    return [
        Source(f"{namespace}:{name}", "zset" if name.endswith(".XQ") else "left", f"{namespace}:{name}.msgs")
        for name in names
    ]


class RedisTake:
    """Dramatiq on Redis, through :class:`~taskbridge.taking.redis.RedisTaker` (an id moves with its message)."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._taker = RedisTaker(broker.client, broker.namespace)

    def take(self, queue: str, names: Sequence[str], limit: int) -> list[Taken]:
        taken: list[Taken] = []
        for source in redis_sources(self._broker.namespace, names):
            if len(taken) < limit:
                taken.extend(self._taker.take(source, queue_of(source.key, self._broker.namespace), limit - len(taken)))
        return taken

    def close(self) -> None:
        """Forget the empty holdings; the broker's client is the engine's."""
        self._taker.close()


def queue_of(name: str, namespace: str | None = None) -> str:
    """The taskbridge queue of a Dramatiq queue or key name (``.DQ`` and ``.XQ`` removed)."""
    if namespace and name.startswith(namespace + ":"):
        name = name[len(namespace) + 1 :]
    return name[:-3] if name.endswith((".DQ", ".XQ")) else name


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
    """Dramatiq on RabbitMQ: pika's ``basic_get`` without auto-ack on a connection of its own.

    The channel stays open while items are held; if this process dies, RabbitMQ delivers them again.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Any = None
        self._channel: Any = None

    def _open(self) -> Any:
        import pika

        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(self._url))
            self._channel = None
        if self._channel is None:
            self._channel = self._connection.channel()
        return self._channel

    def take(self, queue: str, names: Sequence[str], limit: int) -> list[Taken]:
        channel = self._open()
        taken: list[Taken] = []
        for name in names:
            if not self._exists(name):
                continue
            while len(taken) < limit:
                method, _properties, body = channel.basic_get(name, auto_ack=False)
                if method is None:
                    break
                taken.append(AmqpTaken(self, queue_of(name), method.delivery_tag, body, bool(method.redelivered)))
        return taken

    def _exists(self, name: str) -> bool:
        """A passive declare on a throwaway channel: its 404 closes that channel, not the holding one."""
        import pika.exceptions

        probe = self._connection.channel()
        try:
            probe.queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return False
        finally:
            if probe.is_open:
                probe.close()

    def ack_many(self, items: Sequence[AmqpTaken]) -> None:
        for item in items:
            self._channel.basic_ack(item.delivery_tag)

    def release_many(self, items: Sequence[AmqpTaken]) -> None:
        for item in items:
            self._channel.basic_nack(item.delivery_tag, requeue=True)

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = self._channel = None


class SqsTake:
    """Dramatiq on SQS: dramatiq-sqs's queue names and boto3 client, taken through :class:`SqsTaker`."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._taker = SqsTaker(broker.sqs.meta.client)

    def take(self, queue: str, names: Sequence[str], limit: int) -> list[Taken]:
        taken: list[Taken] = []
        for name in names:
            url = self._broker._existing_url(name)
            if url is not None and len(taken) < limit:
                taken.extend(self._taker.take(url, queue_of(name), limit - len(taken)))
        return taken

    def close(self) -> None:
        """The broker's client is the engine's; nothing of its own to close."""


def own_dead_letters(broker: Any, transport: str, queue: str, *, purge: bool = False) -> int:
    """How many of Dramatiq's own dead letters (``.XQ``) ``queue`` has; with ``purge``, drop them."""
    name = xq_name(queue)
    if transport == "redis":
        key = f"{broker.namespace}:{name}"
        count = int(broker.client.zcard(key))
        if purge:
            broker.client.delete(key, f"{key}.msgs")
        return count
    if transport == "amqp":
        return int(broker.count_one(name, purge=purge))
    return 0  # dramatiq-sqs keeps no dead letters of its own unless asked to, and taskbridge does not ask
