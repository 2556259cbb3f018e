"""Celery's task-consumer step, for queues that refuse a channel-wide prefetch limit.

Celery sets its prefetch limit for the whole channel (global QoS) on RabbitMQ. A quorum or stream
queue refuses to be consumed on such a channel (``540 NOT_IMPLEMENTED ... does not support global
qos``, which closes the connection). Celery turns global QoS off only for the quorum queues its own
configuration declares, not for one an operator or another app declared first, which taskbridge
adopts as it is (taskbridge.adopted_queues): the worker then reconnected forever, consuming nothing.
Here the refusal is remembered, said once, and the consumer reconnects with a limit per consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from amqp.exceptions import AMQPNotImplementedError

log = logging.getLogger("taskbridge.celery")

GLOBAL_QOS_REFUSED = "does not support global qos"
"""RabbitMQ's reply when a quorum or stream queue is consumed on a channel with global QoS."""


def fall_back_to_per_consumer_qos(tasks_step: Any, consumer: Any) -> None:
    """Make Celery's ``Tasks`` step of ``consumer`` use a prefetch limit per consumer once
    :func:`global_qos_refused` saw RabbitMQ refuse a global one. The step instance is wrapped, not
    replaced: Celery's other consumer steps require its ``Tasks`` class by identity."""
    celery_qos_global: Callable[[Any], bool] = tasks_step.qos_global
    consumer.global_qos_refused = False

    def qos_global(c: Any) -> bool:
        return bool(celery_qos_global(c)) and not c.global_qos_refused

    tasks_step.qos_global = qos_global


def global_qos_refused(consumer: Any, exc: BaseException) -> bool:
    """Whether ``exc``, which ended ``consumer``'s connection, is RabbitMQ refusing global QoS on a
    queue; the first time, the consumer is told to reconnect with a limit per consumer."""
    if not isinstance(exc, AMQPNotImplementedError) or GLOBAL_QOS_REFUSED not in str(exc):
        return False
    if not getattr(consumer, "global_qos_refused", True):
        consumer.global_qos_refused = True
        log.warning(
            "RabbitMQ refuses a channel-wide prefetch limit on a queue this worker reads (a quorum or stream "
            "queue: %s); the worker reconnects with a prefetch limit per queue instead",
            exc,
        )
    return True
