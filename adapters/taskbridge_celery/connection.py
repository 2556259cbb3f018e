"""One broker connection per process (prefork children get their own), used under a lock."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from celery import Celery
from kombu import Connection

T = TypeVar("T")


class ProcessConnection:
    """A kombu connection owned by the current process, rebuilt after a fork or a broken link."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._lock = threading.RLock()
        self._pid: int | None = None
        self._connection: Connection | None = None

    @contextlib.contextmanager
    def using(self) -> Iterator[Connection]:
        """The connection, held exclusively for the block."""
        with self._lock:
            if self._pid != os.getpid() or self._connection is None:
                # After a fork the parent's sockets are the parent's: never close them here.
                self._connection = self._app.connection_for_write()
                self._pid = os.getpid()
            yield self._connection

    def call(self, action: Callable[[Connection], T]) -> T:
        """Run ``action`` on the connection; on a connection error reconnect and run it once more."""
        with self.using() as connection:
            errors = connection.connection_errors + connection.channel_errors
            try:
                return action(connection)
            except errors:
                self.reset()
        with self.using() as connection:
            return action(connection)

    def reset(self) -> None:
        """Drop the connection; the next use opens a new one."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and self._pid == os.getpid():
                with contextlib.suppress(Exception):
                    connection.release()

    def close(self) -> None:
        self.reset()
