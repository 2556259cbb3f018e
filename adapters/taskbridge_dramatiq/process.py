"""One worker process: a Dramatiq Worker on the engine's broker, stopped or recycled on request."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dramatiq

from taskbridge import carrying
from taskbridge.duplicates import flush_finished_marks

from .actors import legacy_item, message_queue, raw_body
from .brokers import consumer_timeout_ms
from .brokers.common import taskbridge_queue
from .brokers.guard import envelope_text, raw_item
from .middleware import JobAbandoned, ProcessMiddleware, Running
from .outage import report_outages

if TYPE_CHECKING:
    from .engine import DramatiqEngine

log = logging.getLogger("taskbridge.dramatiq")

_JOIN_MS = 2000
"""How long Worker.stop waits for worker threads once their jobs are done (or abandoned)."""

EXIT_RECYCLE = 75
"""Exit code of a worker process that asks its supervisor for a replacement."""


class WorkerProcess:
    """Runs the engine's jobs in this process until SIGTERM, a hard timeout or the memory limit."""

    def __init__(self, engine: DramatiqEngine, queues: Sequence[str], threads: int) -> None:
        self.engine = engine
        self.queues = list(queues)
        self.threads = threads
        self.options = engine.options
        self._stop = threading.Event()
        self._exit_lock = threading.Lock()
        self._exit_code = 0
        self._grace = self.options.shutdown_timeout
        self._worker: dramatiq.Worker | None = None
        self._held: list[Running] = []  # messages whose outcome could not be stored: handed back at exit
        self._runner = engine.runner
        self._aliases = engine.job_aliases()  # a message for one of these names may be an old producer's
        self._queues: dict[str, str] = {}
        self._flags_redelivered = engine.facts.flags_lost_acks
        max_memory = engine.settings.worker_max_memory_mb
        self.middleware = ProcessMiddleware(
            hard_timeout_of=engine.hard_timeout_of,
            max_memory_mb=max_memory,
            on_hard_timeout=self._hard_timeout,
            on_over_memory=self._over_memory,
        )

    def request_exit(self, code: int, grace: float) -> None:
        """Stop taking messages, give running jobs ``grace`` seconds, then exit with ``code``."""
        with self._exit_lock:
            if self._stop.is_set():
                return
            self._exit_code, self._grace = code, grace
            self._stop.set()

    def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self.request_exit(0, self.options.shutdown_timeout))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's business
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        broker = self.engine.start_worker_broker(self.middleware, self._handle, self.queues)
        consumed = [*self.queues, *self.engine.legacy_queues(broker, self.queues)]
        worker = self._worker = dramatiq.Worker(
            broker,  # type: ignore[arg-type]
            queues=set(consumed),
            worker_threads=self.threads,
            worker_timeout=consumer_timeout_ms(self.engine.transport, self.options),
        )
        logging.getLogger("pika").setLevel(logging.WARNING)  # pika logs every connection step at INFO
        report_outages(self.queues)
        worker.start()
        reaper = threading.Thread(target=self._reap, args=(broker,), name="taskbridge-reaper", daemon=True)
        reaper.start()
        log.info("dramatiq worker process %d: queues=%s threads=%d", os.getpid(), ",".join(self.queues), self.threads)
        self._stop.wait()
        log.info("dramatiq worker process %d stopping (waiting up to %gs for running jobs)", os.getpid(), self._grace)
        self._finish_running(worker)
        worker.stop(timeout=_JOIN_MS)
        for running in [*self._held, *self.middleware.running()]:
            self._requeue(running)
        flush_finished_marks()  # this child process ends without atexit handlers
        broker_: Any = broker
        broker_.close()
        return self._exit_code

    def _finish_running(self, worker: dramatiq.Worker) -> None:
        """Let the running jobs finish, up to the grace period. A job abandoned after a hard timeout
        is no longer counted, so the process does not wait for a thread that will never return."""
        for thread in worker.workers:
            thread.stop()
        deadline = time.monotonic() + self._grace
        while self.middleware.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _handle(self, *args: Any, **kwargs: Any) -> None:
        """The body of every actor: hand the envelope text to the runner, which carries out the outcome."""
        message: Any = self.middleware.current_message()
        # The Message behind Dramatiq's proxy: each attribute read through the proxy is a Python call.
        plain = message._message if message is not None else None
        queue = self._queue_of(plain.queue_name) if plain is not None else None
        # RabbitMQ's proxy carries the redelivered flag; other transports flag nothing.
        redelivered = self._flags_redelivered and message is not None and message.redelivered is True
        try:
            item = raw_item(plain)
            if item is None and plain is not None and plain.actor_name in self._aliases:
                old = legacy_item(message)
                if old is not None:
                    self.engine.runner.run_item(old, queue or "", redelivered=redelivered)
                    return
            if item is not None:
                self.engine.run_message(raw_body(args, kwargs), queue, item, redelivered=redelivered)
            else:
                self._runner.run(raw_body(args, kwargs), queue, redelivered=redelivered)
        except JobAbandoned:
            return
        except Exception:
            # The runner stores a decided outcome until it sticks (taskbridge.carrying); it raises only
            # when it could not decide one, before the job ran. The message must not be acknowledged,
            # and Dramatiq acknowledges whatever returns, so this thread holds the message until the
            # process is replaced and the message handed back to the transport.
            message_id = getattr(message, "message_id", "?")
            log.exception("handling message %s failed before the job ran; this worker process is replaced", message_id)
            held = self.middleware.release_current()
            if held is not None:
                self._held.append(held)
            self.request_exit(EXIT_RECYCLE, self.options.hard_timeout_grace)
            threading.Event().wait()

    def _queue_of(self, dramatiq_queue: str) -> str:
        """The taskbridge queue of a Dramatiq queue name (see :func:`.actors.message_queue`), worked out once."""
        queue = self._queues.get(dramatiq_queue)
        if queue is None:
            queue = self._queues[dramatiq_queue] = taskbridge_queue(dramatiq_queue)
        return queue

    def _reap(self, broker: Any) -> None:
        from .brokers import redis_heartbeat_timeout

        interval = max(0.5, redis_heartbeat_timeout(self.engine.settings, self.options) / 4)
        while not self._stop.wait(interval):
            for queue in self.queues:
                try:
                    broker.reap(queue)
                except Exception as exc:
                    log.debug("recovering dead workers' messages on %s failed: %s", queue, exc)

    def _consumer(self, message: Any) -> Any:
        assert self._worker is not None
        return self._worker.consumers[message.queue_name]

    def _requeue(self, running: Running) -> None:
        """A job still running when the process exits: deliver it again (at least once)."""
        message: Any = running.message
        log.warning("job message %s still running at exit; it will be delivered again", message.message_id)
        try:
            self.engine.broker.requeue_now(self._consumer(message), message)
        except Exception:
            log.exception("could not hand message %s back; the transport redelivers it later", message.message_id)

    def _hard_timeout(self, running: Running) -> None:
        """The job overran ``hard_timeout``: record the failure, acknowledge it, replace this process.

        Dramatiq cannot stop a thread, so the process that runs it is recycled; the failure goes
        through the job's retry policy like any other (retried or dead-lettered, ``timed_out``).
        """
        message: Any = running.message
        seconds = self.engine.hard_timeout_of(message.actor_name) or 0.0
        reason = f"hard timeout: still running after {seconds:g}s; the worker process is replaced"
        log.error("job %s (message %s): %s", message.actor_name, message.message_id, reason)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(running.thread_id), ctypes.py_object(JobAbandoned))
        try:
            with carrying.without_holding():  # the watchdog thread must not block on a broker
                self.engine.runner.fail_killed(
                    envelope_text(message) or raw_body(message.args, message.kwargs),
                    reason,
                    timed_out=True,
                    queue=message_queue(message),
                )
        except Exception:
            log.exception("recording the hard timeout failed; the message will be delivered again")
        else:
            self._consumer(message).post_process_message(message)
        self.request_exit(EXIT_RECYCLE, self.options.hard_timeout_grace)

    def _over_memory(self, used_mb: float) -> None:
        if self._stop.is_set():
            return
        log.warning(
            "worker process %d uses %.0f MiB, over TASKBRIDGE_WORKER_MAX_MEMORY_MB=%s: it finishes its jobs "
            "and is replaced",
            os.getpid(),
            used_mb,
            self.engine.settings.worker_max_memory_mb,
        )
        self.request_exit(EXIT_RECYCLE, self.options.shutdown_timeout)
