"""The Celery app built from taskbridge settings: JSON only, late acks, no Celery retries,
rate limits or result backend (the core runner owns those)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery, signals
from kombu import Exchange

from taskbridge import Settings
from taskbridge.duplicates import flush_finished_marks
from taskbridge.layout import amqp_queue_arguments

from .broker import Broker
from .graceful_stop import GracefulStop
from .layout_queue import LayoutQueue

DEFAULT_EXCHANGE = Exchange("", type="direct")
"""Messages go through the broker's default exchange straight to the queue named by the routing
key, so no exchange or binding has to exist (and Redis needs no binding table)."""


def _flush_finished_marks(**_: Any) -> None:
    """A pool child ends with ``os._exit`` (no ``atexit`` handlers): its last finished marks are
    written as it stops."""
    flush_finished_marks()


signals.worker_process_shutdown.connect(_flush_finished_marks, weak=False, dispatch_uid="taskbridge-finished-marks")


@lru_cache(maxsize=4096)
def queue(name: str) -> LayoutQueue:
    """The kombu queue for a taskbridge queue name, declared the same by producers and workers.

    Its arguments are the shared layout's (taskbridge.layout), so a Dramatiq worker may declare
    the same RabbitMQ queue before or after; Redis and SQS ignore them. A RabbitMQ queue that
    already exists with other arguments is used as it is (taskbridge.adopted_queues).
    """
    return LayoutQueue(
        name, DEFAULT_EXCHANGE, routing_key=name, durable=True, queue_arguments=amqp_queue_arguments(name)
    )


def build_app(settings: Settings, broker: Broker, *, task_events: bool = False) -> Celery:
    """A Celery app configured for taskbridge; it is not set as Celery's current app.

    ``task_events`` turns on Celery's task events, which Flower and ``celery events`` read."""
    app = Celery("taskbridge", set_as_current=False)
    config: dict[str, Any] = {
        "broker_url": broker.url,
        "broker_transport_options": broker.transport_options,
        "broker_connection_retry_on_startup": True,
        # A worker whose broker goes away reconnects for as long as it takes (Celery's default gives
        # up after 100 attempts, about 50 minutes, and exits).
        "broker_connection_max_retries": None,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        "task_default_queue": settings.default_queue,
        "task_default_exchange": "",
        "task_default_routing_key": settings.default_queue,
        "task_create_missing_queues": True,
        "worker_prefetch_multiplier": settings.prefetch,
        "worker_concurrency": settings.worker_concurrency,
        "worker_disable_rate_limits": True,
        "worker_send_task_events": task_events,
        "task_send_sent_event": task_events,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_consumer": "taskbridge_celery.consumer:EnvelopeConsumer",
        "enable_utc": True,
    }
    if broker.transport:
        config["broker_transport"] = broker.transport
    if broker.ssl is not None:
        config["broker_use_ssl"] = broker.ssl
    if settings.worker_max_memory_mb:
        config["worker_max_memory_per_child"] = settings.worker_max_memory_mb * 1024
    if broker.scheme == "sqs":
        # Remote control needs fanout, which kombu's SQS transport only offers through SNS.
        config["worker_enable_remote_control"] = False
    app.conf.update(config)
    app.steps["worker"].add(GracefulStop)
    return app


def consume(app: Celery, queues: Sequence[str]) -> None:
    """Make the worker consume exactly ``queues``."""
    app.conf.task_queues = [queue(name) for name in queues]
