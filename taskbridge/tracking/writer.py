"""Group commit of record writes: one background thread per process sends every write queued
since its last call in one script call, so workers pay no round trip per job."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CoordinationError
from .record import Fields

log = logging.getLogger("taskbridge.tracking")

BATCH_LIMIT = 500


@dataclass
class Write:
    """One record write: set ``fields``, expire in ``ttl`` seconds, wake waiters if ``notify``;
    with ``guard`` a cancelled record is left as it is."""

    job_id: str
    fields: Fields
    ttl: float
    notify: bool
    guard: bool


Send = Callable[[list[Write]], None]


class GroupWriter:
    """Queues writes and sends them from one thread: right away when idle, and under load all that
    queued up meanwhile in one call (writes to one job merged, in order). Restarts after a fork."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._pid = -1
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._start_lock = threading.Lock()
        self._failing_since: float | None = None

    def put(self, write: Write) -> None:
        if self._pid != os.getpid():
            self._start()
        self._idle.clear()
        self._queue.put(write)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued write was sent (or dropped because the store is down)."""
        if self._pid != os.getpid():
            return True
        self._queue.put(None)
        return self._idle.wait(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            self._idle = threading.Event()
            self._pid = os.getpid()
            threading.Thread(target=self._loop, name="taskbridge-records", daemon=True).start()
            atexit.register(self.flush, 2.0)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            batch: dict[str, Write] = {}
            item: Write | None = first
            while True:
                if item is not None:
                    _merge(batch, item)
                if len(batch) >= BATCH_LIMIT or self._queue.empty():
                    break
                item = self._queue.get()
            if batch:
                self._send_batch(list(batch.values()))
            if self._queue.empty():
                self._idle.set()

    def _send_batch(self, writes: list[Write]) -> None:
        try:
            self._send(writes)
        except CoordinationError as exc:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("job records are not written while the store is unreachable (%s)", exc)
            return
        except Exception:
            log.exception("writing %d job records failed; they are dropped", len(writes))
            return
        if self._failing_since is not None:
            log.warning("job records are written again after %.0fs", time.monotonic() - self._failing_since)
            self._failing_since = None


def _merge(batch: dict[str, Write], write: Write) -> None:
    held = batch.get(write.job_id)
    if held is None:
        batch[write.job_id] = Write(write.job_id, dict(write.fields), write.ttl, write.notify, write.guard)
        return
    held.fields.update(write.fields)
    held.ttl = write.ttl
    held.notify = held.notify or write.notify
    held.guard = held.guard and write.guard
