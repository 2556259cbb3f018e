"""Where Dramatiq's messages live, for :meth:`DramatiqEngine.take`; the taking is ``taskbridge.taking``'s.

Per transport (``q`` a taskbridge queue):
Redis: ids in the lists ``<ns>:q`` and ``<ns>:q.DQ`` (workers pop from the left), messages in the
hashes ``<ns>:q.msgs`` and ``<ns>:q.DQ.msgs``; dead letters in ``<ns>:q-dead`` and Dramatiq's own
sorted set ``<ns>:q.XQ`` (messages in ``.XQ.msgs``). RabbitMQ: ``q`` and ``q.DQ``; dead letters
``q-dead`` and ``q.XQ``. SQS: dramatiq-sqs's ``<ns>_q`` and ``<ns>_q-dead`` (delays are SQS
DelaySeconds, so there is no delay queue, and no ``.XQ``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dramatiq.common import dq_name, xq_name

from taskbridge.taking.amqp import AmqpTake
from taskbridge.taking.redis import RedisTake, Source
from taskbridge.taking.sqs import SqsTake

from .amqp_channel import PikaChannel


def queue_names(queue: str, dead_queue: str, *, dead_letters: bool) -> list[str]:
    """The Dramatiq queues holding ``queue``'s waiting messages, or its dead letters."""
    return [dead_queue, xq_name(queue)] if dead_letters else [queue, dq_name(queue)]


def redis_sources(namespace: str, names: Sequence[str]) -> list[Source]:
    """Dramatiq's Redis keys for those queues: ``.XQ`` is a sorted set, the others lists of ids."""
    return [
        Source(f"{namespace}:{name}", "zset" if name.endswith(".XQ") else "left", f"{namespace}:{name}.msgs")
        for name in names
    ]


Take = RedisTake | AmqpTake | SqsTake


def open_take(broker: Any, transport: str, url: str) -> Take:
    """The take for Dramatiq's layout on ``broker``'s transport (``url``: pika's form of the broker URL)."""
    if transport == "redis":
        return RedisTake(
            broker.client, broker.namespace, lambda name: redis_sources(broker.namespace, [name]), own_client=False
        )
    if transport == "amqp":
        return AmqpTake(lambda: PikaChannel(url))
    return SqsTake(lambda name: _sqs_queue(broker, name))


def take_names(names: Sequence[str]) -> list[tuple[str, str]]:
    """Dramatiq queue names paired with the taskbridge queue their messages belong to."""
    return [(name, queue_of(name)) for name in names]


def queue_of(name: str) -> str:
    """The taskbridge queue of a Dramatiq queue name (``.DQ`` and ``.XQ`` removed)."""
    return name[:-3] if name.endswith((".DQ", ".XQ")) else name


def _sqs_queue(broker: Any, name: str) -> tuple[str, Any] | None:
    url = broker._existing_url(name)
    return None if url is None else (url, broker.sqs.meta.client)


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
