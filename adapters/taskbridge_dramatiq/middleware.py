"""Worker-process bookkeeping as Dramatiq middleware: the message each thread runs, hard timeouts, memory."""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import dramatiq
from dramatiq.broker import MessageProxy

from taskbridge import carrying

log = logging.getLogger("taskbridge.dramatiq")


class JobAbandoned(BaseException):
    """Raised into a thread whose job passed its hard timeout, so that, should the job ever return,
    the runner carries out nothing more (a BaseException passes the runner's ``except Exception``)."""


class Running(NamedTuple):
    """A message a worker thread is running, and when its hard timeout passes (a tuple: one is made
    for every message)."""

    message: MessageProxy
    thread_id: int
    started: float
    deadline: float | None


def resident_mb() -> float:
    """This process's resident memory in MiB (peak, where the current value is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class ProcessMiddleware(dramatiq.Middleware):
    """Tracks running messages so a hard timeout or the memory limit can act on this worker process."""

    def __init__(
        self,
        *,
        hard_timeout_of: Callable[[str], float | None],
        max_memory_mb: int | None,
        on_hard_timeout: Callable[[Running], None],
        on_over_memory: Callable[[float], None],
    ) -> None:
        self._hard_timeout_of = hard_timeout_of
        self._max_memory_mb = max_memory_mb
        self._on_hard_timeout = on_hard_timeout
        self._on_over_memory = on_over_memory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._running: dict[int, Running] = {}
        self._watchdog: threading.Thread | None = None

    def current_message(self) -> MessageProxy | None:
        """The message the calling worker thread is running."""
        return getattr(self._local, "message", None)

    def running(self) -> list[Running]:
        """Messages still running, oldest first."""
        with self._lock:
            return sorted(self._running.values(), key=lambda r: r.started)

    def release_current(self) -> Running | None:
        """Stop counting the calling thread's message as running (the thread will not return it)."""
        with self._lock:
            return self._running.pop(threading.get_ident(), None)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._local.message = message
        hard = self._hard_timeout_of(message.actor_name)
        now = time.monotonic()
        ident = threading.get_ident()
        with self._lock:
            self._running[ident] = Running(message, ident, now, now + hard if hard else None)
        if hard and self._watchdog is None:
            self._start_watchdog()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._finished()
        if self._max_memory_mb is not None:
            used = resident_mb()
            if used > self._max_memory_mb:
                self._on_over_memory(used)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._finished()

    def _finished(self) -> None:
        self._local.message = None
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(target=self._watch, name="taskbridge-hard-timeouts", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                # A thread storing its outcome has finished the job; it only waits for the broker.
                overdue = [
                    (ident, r)
                    for ident, r in self._running.items()
                    if r.deadline is not None and r.deadline <= now and not carrying.is_holding(ident)
                ]
                for ident, _ in overdue:
                    del self._running[ident]
            for _, running in overdue:
                try:
                    self._on_hard_timeout(running)
                except Exception:
                    log.exception("handling the hard timeout of message %s failed", running.message.message_id)
