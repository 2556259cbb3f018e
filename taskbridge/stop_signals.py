"""SIGTERM and SIGINT as a request to stop, for the long-running commands that run in this process."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger("taskbridge.stop_signals")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stopped_by_signals(stop: Callable[[], None], what: str) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT call ``stop`` (``what`` names the command in the log).

    The handlers are installed whatever the signals' disposition was, as Celery's and Dramatiq's
    workers do: a process started in the background by a shell inherits SIGINT ignored, and would
    otherwise never stop on ``kill -INT``. Outside the main thread, where Python allows no handler,
    it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("%s: %s received, stopping", what, signal.Signals(signum).name)
        stop()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
