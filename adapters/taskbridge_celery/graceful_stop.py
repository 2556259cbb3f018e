"""A clean stop (SIGTERM) of the Celery worker: the jobs it took finish first, its event loop
still running, and only then does Celery's warm shutdown begin.

Celery's warm shutdown stops the event loop at once and reads the pool's last results afterwards
(``AsynPool`` ``on_stop_not_started``), but only while the pool's cache holds an unfinished job.
A job written to a pool process just before the stop, whose "accepted" and "ready" messages the
loop had not read yet, is missed there: its message is never acknowledged (the broker delivers
it again and the job runs twice), and the pool process waits 30 s (billiard's
``_ensure_messages_consumed``) for the main process to count its result before it exits.

:class:`GracefulStop` takes SIGTERM and SIGINT (Ctrl-C) over: the worker stops consuming, keeps its
event loop running until no job it took is left (reserved or running; countdown jobs it merely
holds go back to the broker), and then sets Celery's warm-shutdown flag, so nothing is in flight
when the loop stops. A stop signal while the event loop does not run (the worker is reconnecting
to an unreachable broker) starts Celery's warm shutdown at once.

A second signal does not wait, as in Celery: a second SIGTERM starts Celery's warm shutdown, and a
second Ctrl-C Celery's cold shutdown, which ends the running jobs (they are not acknowledged, so
the broker delivers them again); a third Ctrl-C is Celery's, terminating the worker by force.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from time import monotonic
from types import FrameType
from typing import Any

from billiard.process import current_process
from celery import bootsteps, platforms
from celery.apps.worker import install_worker_term_hard_handler, safe_say
from celery.platforms import EX_OK
from celery.worker import state

log = logging.getLogger("taskbridge.celery")

CHECK_INTERVAL = 0.2
"""Seconds between the event loop's looks at a requested stop."""
LOOP_GONE = 2.0
"""Seconds without a look after which the event loop counts as not running (the worker is
reconnecting to a lost broker): a requested stop is then Celery's warm shutdown at once."""


STOP_SIGNALS = ("SIGTERM", "SIGINT")
"""The signals whose first one drains the jobs the worker took."""

_running: GracefulStop | None = None
"""The step of the worker running in this process, if any."""


def request_stop() -> bool:
    """Stop the worker running in this process as its first SIGTERM does (the jobs it took finish
    and are acknowledged first); False, having done nothing, when no such worker runs."""
    step = _running
    if step is None:
        return False
    step._requested = True  # only a flag: the event loop acts on it (_check)
    return True


class GracefulStop(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: SIGTERM or Ctrl-C drains the jobs the worker took before the warm shutdown."""

    requires = ("celery.worker.components:Hub", "celery.worker.components:Pool")

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._requested = False
        self._draining = False
        self._celery_handlers: dict[str, Any] = {}
        self._worker: Any = None
        self._timer: Any = None
        self._looked_at = monotonic()
        self._stopped = threading.Event()

    def include_if(self, parent: Any) -> bool:
        return bool(parent.use_eventloop)

    def start(self, parent: Any) -> None:
        global _running
        # Celery installed its handlers before the steps started (WorkController.on_start).
        self._worker = parent
        for name in STOP_SIGNALS:
            self._celery_handlers[name] = platforms.signals[name]
            platforms.signals[name] = self._on_stop_signal
        # Registered before the consumer starts, so a reconnection does not cancel it.
        self._timer = parent.hub.call_repeatedly(CHECK_INTERVAL, self._check, parent)
        threading.Thread(target=self._watch, name="taskbridge-graceful-stop", daemon=True).start()
        _running = self

    def stop(self, parent: Any) -> None:
        global _running
        if _running is self:
            _running = None
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watch(self) -> None:
        """While the event loop does not run (a lost broker), a requested stop cannot wait for it."""
        while not self._stopped.wait(CHECK_INTERVAL):
            if self._requested and monotonic() - self._looked_at > LOOP_GONE:
                log.info("the worker is not consuming (its broker is unreachable): it stops now")
                state.should_stop = EX_OK
                return

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        celery_handler = self._celery_handlers.get(name)
        if current_process()._name != "MainProcess" or not callable(celery_handler):
            if callable(celery_handler):
                celery_handler(signum, frame)
            return
        if self._requested:
            if name == "SIGINT":  # Celery's second Ctrl-C
                install_worker_term_hard_handler(self._worker, sig="SIGINT")
                celery_handler = platforms.signals["SIGINT"]
            celery_handler(signum, frame)
            return
        self._requested = True  # only a flag: the event loop acts on it (_check)
        again = "Ctrl-C again ends the running jobs" if name == "SIGINT" else "SIGTERM again stops it at once"
        safe_say(f"worker: stopping once the jobs it took have finished; {again} (MainProcess)", sys.__stdout__)

    def _check(self, parent: Any) -> None:
        self._looked_at = monotonic()
        if not self._requested:
            return
        consumer = parent.consumer
        if not self._draining:
            self._draining = True
            task_consumer = getattr(consumer, "task_consumer", None)
            if task_consumer is not None:
                errors = (*(consumer.connection_errors or ()), *(getattr(consumer, "channel_errors", None) or ()))
                with contextlib.suppress(*errors):
                    task_consumer.cancel()  # the broker sends no more; what it sent still runs
        if not state.reserved_requests:  # reserved: taken and not finished, running ones included
            log.info("the jobs this worker took have finished: it stops")
            state.should_stop = EX_OK
