"""Queue-depth gauges: how many messages wait in each queue and its dead letters, read from the
broker when ``/metrics`` is scraped."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("taskbridge.metrics")


class QueueDepthCollector:
    """``taskbridge_queue_depth`` and ``taskbridge_dead_letter_depth`` per queue, read from the
    engine at scrape time (or reused for ``max_age`` seconds, when several scrapers share a
    worker); a queue whose depth cannot be read is left out of that scrape and logged."""

    def __init__(
        self,
        queues: Sequence[str],
        depth: Callable[[str], int],
        dead_letter_queue: Callable[[str], str],
        max_age: float = 0.0,
        *,
        done: Callable[[], None] | None = None,
    ) -> None:
        self.queues = list(queues)
        self.depth = depth
        self.dead_letter_queue = dead_letter_queue
        self.max_age = max_age
        self.done = done
        """Called after each read of all the queues (e.g. to close a client)."""
        from prometheus_client.core import GaugeMetricFamily

        self._family = GaugeMetricFamily  # imported here, not in a scrape thread (see multiprocess)
        self._lock = threading.Lock()
        self._cached: tuple[float, list[tuple[str, int | None, int | None]]] | None = None

    def _read(self, queue: str) -> int | None:
        try:
            return int(self.depth(queue))
        except Exception as exc:
            log.warning("metrics: cannot read the depth of queue %r: %s", queue, exc)
            return None

    def read(self) -> list[tuple[str, int | None, int | None]]:
        """``(queue, depth, dead letters)`` for each queue; None where it could not be read."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.max_age:
                try:
                    rows = [(q, self._read(q), self._read(self.dead_letter_queue(q))) for q in self.queues]
                finally:
                    if self.done is not None:
                        with contextlib.suppress(Exception):
                            self.done()
                self._cached = (now, rows)
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        """The two gauges (a prometheus-client collector)."""
        depth = self._family("taskbridge_queue_depth", "Messages waiting in the queue", labels=["queue"])
        dead = self._family(
            "taskbridge_dead_letter_depth", "Messages in the queue's dead-letter queue", labels=["queue"]
        )
        for queue, waiting, dead_letters in self.read():
            if waiting is not None:
                depth.add_metric([queue], waiting)
            if dead_letters is not None:
                dead.add_metric([queue], dead_letters)
        yield depth
        yield dead
