"""A lost broker in a Dramatiq worker process: each consumer thread would log every failed restart,
every 3 seconds (and pika every step of each failed connection, with tracebacks). The outage is
logged once instead, then reminded with a count (:func:`taskbridge.outage.broker_outage`), and the
restarts back off while it lasts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from dramatiq.common import dq_name
from dramatiq.worker import CONSUMER_RESTART_DELAY_SECS

from taskbridge.outage import broker_outage

_CONNECTION_ERROR = "Consumer encountered a connection error: %s"
_RESTARTING = "Restarting consumer in %0.2f seconds."
_POST_PROCESS_FAILED = "Failed to post_process_message(%s) due to a connection error: %s"
_UNKNOWN_TAG = ("Failed to ack message: not in known tags.", "Failed to nack message: not in known tags.")
SETTLED_TOO_LATE = "could not settle a message taken before the broker connection was lost: it is delivered again"


class _ConsumerFaultsToOutage(logging.Filter):
    """Dramatiq's lines about a consumer's lost connection go to the broker's outage record; so do its
    warnings about each held message whose acknowledgement met the lost connection (with the whole
    message, again every 5 seconds until the broker is back). The acknowledgement of a message taken
    over the lost connection then fails once more (RabbitMQ delivers it again): one short line."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = isinstance(record.msg, str) and record.msg.startswith(_POST_PROCESS_FAILED)
        if (record.msg == _CONNECTION_ERROR or held) and isinstance(record.args, tuple) and len(record.args) > held:
            cause = record.args[1] if held else record.args[0]
            broker_outage().failed(cause if isinstance(cause, BaseException) else str(cause))
            return False
        if record.msg in _UNKNOWN_TAG:
            record.msg = SETTLED_TOO_LATE
            record.levelno, record.levelname = logging.INFO, "INFO"
        return record.msg != _RESTARTING


_filter = _ConsumerFaultsToOutage()
_RABBITMQ_CONSUMER_LOG = "dramatiq.brokers.rabbitmq.GuardedRabbitmqConsumer"


def report_outages(queues: Sequence[str]) -> None:
    """In a worker process consuming ``queues``: route the consumer threads' connection errors to the
    outage record, and keep pika's connection-layer errors (each a step of one failure) out of the log."""
    for queue in queues:
        for name in (queue, dq_name(queue)):
            consumer_log = logging.getLogger(f"dramatiq.worker.ConsumerThread({name})")
            if _filter not in consumer_log.filters:
                consumer_log.addFilter(_filter)
    rabbitmq_log = logging.getLogger(_RABBITMQ_CONSUMER_LOG)
    if _filter not in rabbitmq_log.filters:
        rabbitmq_log.addFilter(_filter)
    logging.getLogger("pika.adapters").setLevel(logging.CRITICAL)


def wait_before_reconnecting() -> None:
    """Called by a consumer thread before it connects: while the broker is down, attempts come about
    as far apart as the outage is old (Dramatiq itself waits a fixed 3 seconds between them)."""
    thread = threading.current_thread()
    broker_outage().wait_before_retry(
        already_waited=CONSUMER_RESTART_DELAY_SECS, stopping=lambda: not getattr(thread, "running", True)
    )


def connected() -> None:
    """A consumer read from the broker: the outage, if any, is over."""
    broker_outage().succeeded()
