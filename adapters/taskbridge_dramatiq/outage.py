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


class _ConsumerFaultsToOutage(logging.Filter):
    """Dramatiq's lines about a consumer's lost connection go to the broker's outage record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _CONNECTION_ERROR and isinstance(record.args, tuple) and record.args:
            cause = record.args[0]
            broker_outage().failed(cause if isinstance(cause, BaseException) else str(cause))
            return False
        return record.msg != _RESTARTING


_filter = _ConsumerFaultsToOutage()


def report_outages(queues: Sequence[str]) -> None:
    """In a worker process consuming ``queues``: route the consumer threads' connection errors to the
    outage record, and keep pika's connection-layer errors (each a step of one failure) out of the log."""
    for queue in queues:
        for name in (queue, dq_name(queue)):
            consumer_log = logging.getLogger(f"dramatiq.worker.ConsumerThread({name})")
            if _filter not in consumer_log.filters:
                consumer_log.addFilter(_filter)
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
