"""``taskbridge worker --reload`` on Celery: a change to a ``*.py`` file under the current directory
stops the worker as SIGTERM does (the jobs it took finish and are acknowledged), then the whole
command starts again in the same process (exec), so the changed code is imported anew. Files are
watched with watchdog, as the Dramatiq engine's ``--reload`` does."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

from celery import platforms
from celery.worker import state

from taskbridge.extras import require

from .graceful_stop import request_stop

log = logging.getLogger("taskbridge.celery")

_CHANGES = {"modified", "created", "moved", "deleted"}


class SourceWatcher:
    """Watches ``directory`` (recursively) for changed ``*.py`` files; the first change asks the
    running Celery worker to stop, and :attr:`changed` tells the caller to start again."""

    def __init__(self, directory: str | None = None) -> None:
        require({"watchdog": "reload"}, "taskbridge worker --reload on the celery engine")
        self.directory = directory or os.getcwd()
        self.changed: str | None = None
        self._observer: Any = None

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class _Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = [os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")]
                changed = next((p for p in paths if p.endswith(".py")), None)
                if event.event_type in _CHANGES and changed is not None:
                    watcher.source_changed(changed)

        self._observer = Observer()
        self._observer.schedule(_Handler(), self.directory, recursive=True)
        self._observer.daemon = True
        self._observer.start()
        log.info("reloading on changes to *.py under %s", self.directory)

    def source_changed(self, path: str) -> None:
        if self.changed is None:
            self.changed = path
            log.info("%s changed: stopping the worker (running jobs finish) to start it again", path)
            # As a first SIGTERM: the jobs the worker took finish and are acknowledged before Celery's
            # warm shutdown, which could miss a job's result and leave it to run again after the restart.
            if not request_stop():
                state.should_stop = 0  # no worker loop yet: Celery's warm shutdown

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None


def start_again() -> NoReturn:
    """Run this process's command line again in place of this process (same pid)."""
    sys.stdout.flush()
    sys.stderr.flush()
    platforms.close_open_fds([sys.__stdin__, sys.__stdout__, sys.__stderr__])
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
