"""Timeouts: ``timeout`` raises :class:`JobTimeout` inside the running job once it has passed (soft);
``hard_timeout`` is the engine's to enforce (it kills the run).

In a process's main thread a SIGALRM timer interrupts even a blocking sleep; in worker threads a
single watchdog thread raises the exception asynchronously (it lands at the job's next Python
bytecode, as with Dramatiq's TimeLimit). Written by hand because no maintained library offers a
per-thread timeout that raises inside the job.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..errors import JobTimeout
from ..spec import DEFAULT
from .base import Draft, Policy


class _Watchdog:
    """One thread that raises JobTimeout in threads whose deadline passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())  # never re-entered: a plain lock is cheaper
        self._heap: list[tuple[float, int, int]] = []
        self._active: dict[int, int] = {}
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        """The process the thread was started in: a forked child has no thread until it starts one."""
        self._wakes_at = math.inf
        """When the thread wakes by itself next (infinity: it waits to be told). A deadline later than
        that needs no wake-up; with one timeout for every job, no job wakes the thread (a
        wake-up per job costs more than the rest of its timeout)."""

    def arm(self, thread_id: int, seconds: float) -> int:
        with self._cond:
            token = next(self._seq)
            self._active[token] = thread_id
            entry = (time.monotonic() + seconds, token, thread_id)
            if len(self._heap) > 2 * len(self._active) + 64:
                # Finished jobs stay in the heap behind a long-running one; drop them now and then.
                self._heap = [e for e in self._heap if e[1] in self._active]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, entry)
            if self._pid != os.getpid() or self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="taskbridge-timeouts", daemon=True)
                self._thread.start()
                self._pid = os.getpid()
            if entry[0] < self._wakes_at:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._active.pop(token, None)

    def _loop(self) -> None:
        finished_due = math.inf
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._active:
                    finished_due = heapq.heappop(self._heap)[0]
                if not self._heap:
                    # Sleeping until told would have the next job wake this thread, and the one after
                    # it, each finishing before the thread runs. Until the deadline of a job that
                    # just finished, a new job's deadline (about as far) can wait in the heap.
                    now = time.monotonic()
                    if now < finished_due < math.inf:
                        self._wakes_at = finished_due
                        self._cond.wait(finished_due - now)
                    else:
                        self._wakes_at = math.inf
                        self._cond.wait()
                    finished_due = math.inf
                    continue
                due, token, thread_id = self._heap[0]
                now = time.monotonic()
                if due > now:
                    self._wakes_at = due
                    self._cond.wait(due - now)
                    continue
                heapq.heappop(self._heap)
                if self._active.pop(token, None) is not None:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(JobTimeout))


_watchdog = _Watchdog()


def _raise_timeout(signum: int, frame: object) -> None:
    raise JobTimeout()


# signal.getsignal wraps the C function of the _signal module and tries to turn every handler into a
# Handlers enum member, raising and catching ValueError for a function: about 2 us, on every job
# that runs in a main thread. The C function answers the same for the question asked here.
_current_handler = getattr(getattr(signal, "_signal", None), "getsignal", signal.getsignal)


def _alarm_available() -> bool:
    """Whether SIGALRM is ours to use in this process (installing our handler if it is free)."""
    if not hasattr(signal, "setitimer"):
        return False
    current = _current_handler(signal.SIGALRM)
    if current is _raise_timeout:
        return True
    if current in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(signal.SIGALRM, _raise_timeout)
        return True
    return False


class _SoftTimeout:
    """The context of one run under a soft timeout (a class rather than a generator: it is entered
    for every job)."""

    __slots__ = ("_alarm", "_seconds", "_token")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._alarm = False
        self._token: int | None = None

    def __enter__(self) -> None:
        seconds = self._seconds
        if not seconds:
            return
        if threading.current_thread() is threading.main_thread() and _alarm_available():
            # The handler stays installed between jobs: only this module sets the timer it answers.
            signal.setitimer(signal.ITIMER_REAL, seconds)
            self._alarm = True
            return
        self._token = _watchdog.arm(threading.get_ident(), seconds)

    def __exit__(self, *exc: object) -> None:
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elif self._token is not None:
            _watchdog.disarm(self._token)


def soft_timeout(seconds: float | None) -> _SoftTimeout:
    """Run the block with a soft timeout; ``None`` means no limit."""
    return _SoftTimeout(seconds)


class Timeout(Policy):
    """Owns ``timeout`` and ``hard_timeout``; the runner runs the job under :func:`soft_timeout`."""

    name = "timeout"
    options = ("timeout", "hard_timeout")

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        timeout = draft.duration("timeout", given.get("timeout", DEFAULT))
        hard = draft.seconds("hard_timeout", given.get("hard_timeout"))
        if hard is not None and isinstance(timeout, float) and hard <= timeout:
            raise draft.invalid(f"hard_timeout ({hard:g}s) must be longer than timeout ({timeout:g}s)")
        return {"timeout": timeout, "hard_timeout": hard}
