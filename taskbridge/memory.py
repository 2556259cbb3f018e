"""The embedded engine: in-process queues, worker threads and delays; the reference Engine."""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import math
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Settings, get_settings
from .engine import MessageRunner, Taken, TransportFacts
from .envelope import Envelope, peek_job_name
from .runner import Runner
from .spec import JobSpec
from .stop_signals import stopped_by_signals

log = logging.getLogger("taskbridge.memory")


@dataclass
class _MemoryTaken:
    """A body taken out of the embedded engine's queues; it is already out, so ``ack`` has nothing to do."""

    engine: MemoryEngine
    queue: str
    text: str | bytes
    due: float | None
    body: bytes = b""
    redelivered: bool = False

    def __post_init__(self) -> None:
        self.body = self.text if isinstance(self.text, bytes) else self.text.encode()

    def ack(self) -> None:
        pass

    def release(self) -> None:
        self.engine._put_back(self.queue, self.text, self.due)


class MemoryEngine:
    """Runs jobs in worker threads of the current process. No server, nothing survives the process.

    By default workers start on the first publish (``memory://``); with ``memory://?autostart=0``
    they run only under :meth:`start` or :meth:`work`. When the process exits with workers
    running, the jobs already due run first (for at most the ``exit_drain_timeout`` setting) and
    a warning lists those that did not (see :meth:`drain_at_exit`); :meth:`join` waits for all.
    """

    name = "memory"
    facts = TransportFacts(max_native_delay=float("inf"), max_message_size=1024 * 1024, multi_process=False)

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.autostart = self.settings.transport.options.get("autostart", "1") not in ("0", "false", "no")
        self._cond = threading.Condition()
        self._ready: dict[str, deque[str | bytes]] = {}
        self._delayed: list[tuple[float, int, str, str | bytes]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._runner: MessageRunner | None = None

    def declare(self, spec: JobSpec, runner: MessageRunner) -> None:
        self._runner = runner

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        due = time.monotonic() + delay
        with self._cond:
            for envelope in envelopes:
                body = envelope.encode()
                if delay > 0:
                    heapq.heappush(self._delayed, (due, next(self._seq), envelope.queue, body))
                else:
                    self._ready.setdefault(envelope.queue, deque()).append(body)
            self._cond.notify_all()
        if self.autostart and not self._threads:
            self.start()

    def put_raw(self, queue: str, body: bytes | str) -> None:
        """Append an item to ``queue`` exactly as given, as another producer would write it."""
        with self._cond:
            self._ready.setdefault(queue, deque()).append(body)
            self._cond.notify_all()

    def start(self, queues: Sequence[str] | None = None, concurrency: int | None = None) -> None:
        """Start worker threads on ``queues`` (None: every queue but dead letters) and return."""
        with self._cond:
            if self._threads:
                return
            if self._runner is None:  # embedded: jobs run without a worker that declares them
                self._runner = Runner(self, self.settings)
            self._stopping.clear()
            _running.add(self)
            count = concurrency or self.settings.worker_concurrency
            for index in range(count):
                thread = threading.Thread(
                    target=self._work_loop,
                    args=(tuple(queues) if queues else None,),
                    name=f"taskbridge-memory-{index}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def work(self, queues: Sequence[str], concurrency: int) -> None:
        self.start(queues or None, concurrency)
        try:
            with stopped_by_signals(self._stopping.set, "worker"):
                while not self._stopping.wait(0.5):
                    pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers after their current job."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        _running.discard(self)

    def join(self, timeout: float | None = None, include_delayed: bool = True) -> bool:
        """Wait until no job is ready, running (or, by default, delayed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy(include_delayed):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
            return True

    def drain_at_exit(self) -> list[str]:
        """Run the jobs that are due (ready, running, or delayed but due within ``exit_drain_timeout``),
        for at most that long, then stop the workers; log a warning listing what did not run.

        Runs by itself at interpreter exit while workers are running. Returns what did not run.
        """
        if not self._threads:
            return []
        deadline = time.monotonic() + self.settings.exit_drain_timeout
        with self._cond:
            while self._due_before(deadline) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        self.stop(timeout=0.5)
        left = self._left_over()
        if left:
            log.warning(
                "embedded engine: %d job(s) not run before the process exited: %s. The embedded engine "
                "runs jobs inside this process; run a worker (TASKBRIDGE_ENGINE, TASKBRIDGE_BROKER_URL) "
                "for jobs that must outlive it, or wait for them with get_engine().join()",
                sum(left.values()),
                "; ".join(f"{count} x {what}" for what, count in left.items()),
            )
        return list(left.elements())

    def _due_before(self, deadline: float) -> bool:
        if self._in_flight or any(self._ready[q] for q in self._consumed_queues()):
            return True
        return bool(self._delayed) and self._delayed[0][0] <= deadline

    def _left_over(self) -> Counter[str]:
        """What is still waiting, running or delayed, by job and reason."""
        left: Counter[str] = Counter()
        now = time.monotonic()
        with self._cond:
            for queue in self._consumed_queues():
                for body in self._ready[queue]:
                    left[f"{peek_job_name(body)} (not started in time)"] += 1
            if self._in_flight:
                left[f"still running after exit_drain_timeout={self.settings.exit_drain_timeout:g}s"] += self._in_flight
            for due, _, _, body in sorted(self._delayed):
                left[f"{peek_job_name(body)} (countdown: due in {math.ceil(max(0.0, due - now))}s)"] += 1
        return left

    def depth(self, queue: str) -> int:
        with self._cond:
            return len(self._ready.get(queue, ())) + sum(1 for d in self._delayed if d[2] == queue)

    def purge(self, queue: str) -> int:
        with self._cond:
            dropped = len(self._ready.pop(queue, ()))
            kept = [d for d in self._delayed if d[2] != queue]
            dropped += len(self._delayed) - len(kept)
            heapq.heapify(kept)
            self._delayed = kept
            return dropped

    def messages(self, queue: str, include_delayed: bool = False) -> list[str | bytes]:
        """Bodies waiting in ``queue`` (for inspecting dead letters), delayed ones last if asked for."""
        with self._cond:
            ready = list(self._ready.get(queue, ()))
            if not include_delayed:
                return ready
            return ready + [body for _, _, name, body in sorted(self._delayed) if name == queue]

    def take(self, queue: str, limit: int, *, dead_letters: bool = False) -> list[Taken]:
        """Up to ``limit`` waiting bodies of ``queue`` (ready first, then delayed ones), or of its dead letters."""
        name = queue + self.settings.dead_letter_suffix if dead_letters else queue
        taken: list[Taken] = []
        with self._cond:
            ready = self._ready.get(name)
            while ready and len(taken) < limit:
                taken.append(_MemoryTaken(self, name, ready.popleft(), None))
            if len(taken) < limit and any(d[2] == name for d in self._delayed):
                kept = []
                for item in sorted(self._delayed):
                    if item[2] == name and len(taken) < limit:
                        taken.append(_MemoryTaken(self, name, item[3], item[0]))
                    else:
                        kept.append(item)
                self._delayed = kept  # sorted, so still a heap
        return taken

    def _put_back(self, queue: str, body: str | bytes, due: float | None) -> None:
        with self._cond:
            if due is None:
                self._ready.setdefault(queue, deque()).appendleft(body)
            else:
                heapq.heappush(self._delayed, (due, next(self._seq), queue, body))
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()

    def _busy(self, include_delayed: bool) -> bool:
        if self._in_flight or any(self._ready[q] for q in self._consumed_queues()):
            return True
        return include_delayed and bool(self._delayed)

    def _consumed_queues(self) -> list[str]:
        suffix = self.settings.dead_letter_suffix
        return [q for q in self._ready if not q.endswith(suffix)]

    def _take(self, queues: tuple[str, ...] | None) -> tuple[str, str | bytes] | None:
        """The next ready (queue, body), after moving due delayed messages to their queues."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, queue, body = heapq.heappop(self._delayed)
            self._ready.setdefault(queue, deque()).append(body)
        for queue in queues or self._consumed_queues():
            pending = self._ready.get(queue)
            if pending:
                return queue, pending.popleft()
        return None

    def _work_loop(self, queues: tuple[str, ...] | None) -> None:
        assert self._runner is not None
        run = self._runner.run_item
        while not self._stopping.is_set():
            with self._cond:
                taken = self._take(queues)
                if taken is None:
                    wait = 0.5
                    if self._delayed:
                        wait = min(wait, max(0.0, self._delayed[0][0] - time.monotonic()))
                    self._cond.wait(wait)
                    continue
                queue, body = taken
                self._in_flight += 1
            try:
                run(body, queue)
            except Exception:
                log.exception("memory engine: carrying out a message failed; it is put back on %s", queue)
                with self._cond:
                    self._ready.setdefault(queue, deque()).appendleft(body)
                time.sleep(0.1)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()


_running: weakref.WeakSet[MemoryEngine] = weakref.WeakSet()
"""Engines whose workers run: each drains at interpreter exit."""


@atexit.register
def _drain_running_engines() -> None:
    for engine in list(_running):
        try:
            engine.drain_at_exit()
        except Exception:  # never let one engine stop the others from draining
            log.exception("embedded engine: draining at exit failed")
