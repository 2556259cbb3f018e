"""Where Celery's messages live, for :meth:`CeleryEngine.take`; the taking is ``taskbridge.taking``'s.

Redis: the list ``<global_keyprefix><queue>`` (kombu LPUSHes, workers pop from the right) and its
priority lists ``<queue>\\x06\\x16<n>``; RabbitMQ: the queue ``<queue>``; SQS: kombu's
``<namespace>-<queue>``. Dead letters are taskbridge's ``<queue>-dead`` (Celery keeps none of its own).
ETA messages wait in the same queue until a worker holds them, so they are taken like the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskbridge.taking.amqp import AmqpTake
from taskbridge.taking.redis import RedisTake, Source
from taskbridge.taking.sqs import SqsTake

from .amqp_channel import PyAmqpChannel
from .connection import ProcessConnection

if TYPE_CHECKING:
    from .broker import Broker

_KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)

Take = RedisTake | AmqpTake | SqsTake


def redis_keys(broker: Broker, name: str) -> list[str]:
    """The Redis lists that hold the messages of queue ``name``, highest priority first."""
    prefix = str(broker.transport_options.get("global_keyprefix", ""))
    return [prefix + name + (f"{_KOMBU_PRIORITY_SEPARATOR}{p}" if p else "") for p in _KOMBU_PRIORITY_STEPS]


def open_take(broker: Broker, connection: ProcessConnection, namespace: str) -> Take:
    """The take for Celery's layout on ``broker``'s transport."""
    if broker.scheme == "redis":
        import redis

        client = redis.Redis.from_url(broker.url)
        return RedisTake(
            client, namespace, lambda name: [Source(k, "right") for k in redis_keys(broker, name)], own_client=True
        )
    if broker.scheme == "amqp":

        def open_channel() -> PyAmqpChannel:
            with connection.using() as shared:
                return PyAmqpChannel(shared.clone())

        return AmqpTake(open_channel)
    return SqsTake(lambda name: _sqs_queue(connection, name))


def _sqs_queue(connection: ProcessConnection, name: str) -> tuple[str, Any] | None:
    """kombu's URL and boto3 client of queue ``name``, ``None`` when it does not exist."""
    from kombu.transport.SQS.exceptions import DoesNotExistQueueException

    with connection.using() as shared:
        channel: Any = shared.default_channel
        try:
            url = channel._resolve_queue_url(name)
        except DoesNotExistQueueException:
            return None
        return url, channel.sqs(queue=channel.canonical_queue_name(name))
