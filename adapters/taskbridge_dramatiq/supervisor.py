"""The worker's process supervisor: keeps N worker processes running, replaces recycled ones, reloads.

Dramatiq's own CLI supervisor shuts every process down when one exits, so it cannot replace a
process that hit the memory limit or a hard timeout; this one forks each worker process from the
prepared parent (jobs imported and declared once) and forks a fresh one when a process exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from .process import EXIT_RECYCLE

log = logging.getLogger("taskbridge.dramatiq")

_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1


class Supervisor:
    """Runs ``serve`` in ``processes`` forked children until SIGTERM/SIGINT; SIGHUP (or a source change,
    with ``reload``) stops them and re-executes the whole command, so changed code is imported anew."""

    def __init__(
        self,
        serve: Callable[[int], int],
        processes: int,
        *,
        reload: bool,
        respawn_delay: float,
        watch_dir: str | None = None,
    ) -> None:
        self.serve = serve
        self.processes = processes
        self.reload = reload
        self.respawn_delay = respawn_delay
        self.watch_dir = watch_dir or os.getcwd()
        self._context = multiprocessing.get_context("fork")
        self._children: dict[int, BaseProcess] = {}
        self._stopping = False
        self._reloading = False
        self._signals = 0

    def run(self) -> int:
        """Supervise in the foreground; returns the exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        watcher = self._watch() if self.reload else None
        try:
            for index in range(self.processes):
                self._spawn(index)
            while not self._stopping:
                self._wait_and_replace()
            self._stop_children()
        finally:
            if watcher is not None:
                watcher.stop()
                watcher.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._reloading:
            log.info("source changed: restarting the worker")
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if signum == signal.SIGHUP:
            self._reloading = True
        self._stopping = True
        if self._signals > 1 and signum != signal.SIGHUP:
            for child in self._children.values():
                if child.pid is not None and child.is_alive():
                    os.kill(child.pid, signal.SIGKILL)

    def _spawn(self, index: int) -> None:
        # Signals stay blocked across fork until the child has installed its own handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            child = self._context.Process(
                target=_child_main, args=(self.serve, index), name=f"taskbridge-dramatiq-{index}", daemon=False
            )
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        self._children[index] = child

    def _wait_and_replace(self) -> None:
        sentinels = [child.sentinel for child in self._children.values()]
        multiprocessing.connection.wait(sentinels, timeout=0.5)
        for index, child in list(self._children.items()):
            if child.exitcode is None or self._stopping:
                continue
            child.join()
            if child.exitcode == EXIT_RECYCLE:
                log.info("worker process %s was recycled; starting a fresh one", child.pid)
            else:
                log.error(
                    "worker process %s exited unexpectedly (code %s); starting a fresh one in %gs",
                    child.pid,
                    child.exitcode,
                    self.respawn_delay,
                )
                time.sleep(self.respawn_delay)
            if not self._stopping:
                self._spawn(index)

    def _stop_children(self) -> None:
        for child in self._children.values():
            if child.pid is not None and child.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        for child in self._children.values():
            child.join()
        self._children.clear()

    def _watch(self) -> Any:
        from dramatiq.watcher import setup_file_watcher

        log.info("reloading on changes to *.py under %s", self.watch_dir)
        # Watchdog 7 matches patterns against the whole path: "*.py" (and Dramatiq's "**.py") never match.
        return setup_file_watcher(self.watch_dir, False, ["**/*.py"], None)


def _child_main(serve: Callable[[int], int], index: int) -> None:
    for sig in _HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    _stop_with_parent()
    sys.exit(serve(index))


def _stop_with_parent() -> None:
    """Linux: this process gets SIGTERM (a graceful stop) if the supervisor dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.debug("cannot ask to be stopped with the supervisor", exc_info=True)
