"""Group commit of record writes: one background thread per process sends every write queued
since its last call in one script call, so workers pay no round trip per job."""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
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
LINGER = 0.005
BUSY_WITHIN = 0.05
"""A write that comes within this long of the last send waits :data:`LINGER` for others to join it."""
PAUSE_AFTER_FAILURE = 5.0
"""After a failed send, writes are dropped this long before the store is tried again."""


@dataclass
class Write:
    """One record write: set ``fields``, expire in ``ttl`` seconds, wake waiters if ``notify``;
    with ``guard`` a cancelled record is left as it is; with ``only_new`` only fields the record
    lacks are set (and the TTL only of a new record)."""

    job_id: str
    fields: Fields
    ttl: float
    notify: bool
    guard: bool
    only_new: bool = False


Send = Callable[[list[Write]], None]


class GroupWriter:
    """Queues writes and sends them from one thread: right away when idle; under load, every 5 ms
    all that queued up meanwhile in one call (writes to one job merged, in order). Restarts after
    a fork."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._pid = -1
        self._queue: queue.SimpleQueue[Write | threading.Event] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._last_send = 0.0

    def put(self, write: Write) -> None:
        if self._pid != os.getpid():
            self._start()
        self._queue.put(write)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write queued before this call was sent (or dropped: store down)."""
        if self._pid != os.getpid():
            return True
        sent = threading.Event()
        self._queue.put(sent)
        return sent.wait(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            threading.Thread(target=self._loop, name="taskbridge-records", daemon=True).start()
            atexit.register(self.flush, 2.0)
            # Worker processes started by multiprocessing end with os._exit, past atexit; its
            # finalizers still run.
            multiprocessing.util.Finalize(self, self.flush, args=(2.0,), exitpriority=100)

    def _loop(self) -> None:
        while True:
            batch: dict[str, Write] = {}
            flushes: list[threading.Event] = []
            item = self._queue.get()
            if time.monotonic() - self._last_send < BUSY_WITHIN:
                time.sleep(LINGER)  # busy: let writes gather, so that many go in one call
            while True:
                if isinstance(item, Write):
                    _merge(batch, item)
                else:
                    flushes.append(item)
                if len(batch) >= BATCH_LIMIT or self._queue.empty():
                    break
                item = self._queue.get()
            if batch:
                self._send_batch(list(batch.values()))
                self._last_send = time.monotonic()
            for sent in flushes:
                sent.set()

    def _send_batch(self, writes: list[Write]) -> None:
        now = time.monotonic()
        if self._failing_since is not None and now < self._retry_at:
            return  # the store is down: drop, rather than queue without bound
        try:
            self._send(writes)
        except CoordinationError as exc:
            self._retry_at = now + PAUSE_AFTER_FAILURE
            if self._failing_since is None:
                self._failing_since = now
                log.warning("job records are not written while the store is unreachable (%s)", exc)
            return
        except Exception:
            log.exception("writing %d job records failed; they are dropped", len(writes))
            return
        if self._failing_since is not None:
            log.warning("job records are written again after %.0fs", now - self._failing_since)
            self._failing_since = None


def _merge(batch: dict[str, Write], write: Write) -> None:
    held = batch.get(write.job_id)
    if held is None:
        batch[write.job_id] = Write(
            write.job_id, dict(write.fields), write.ttl, write.notify, write.guard, write.only_new
        )
        return
    if write.only_new:
        held.fields = {**write.fields, **held.fields}
        return
    held.fields.update(write.fields)
    held.ttl = write.ttl
    held.notify = held.notify or write.notify
    held.guard = held.guard and write.guard
    held.only_new = False
