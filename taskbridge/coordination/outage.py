"""While the coordination store is unreachable: guarded jobs wait with back-off, the log says so
once, then reminds with a count."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("taskbridge.coordination")

FIRST_WAIT = 1.0
LONGEST_WAIT = 15.0
REMINDER_EVERY = 30.0


class Outage:
    """Tracks one store's outage in this process: how long a guarded job should wait before it is
    tried again (doubling from :data:`FIRST_WAIT` to :data:`LONGEST_WAIT`), and the log lines."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        self._held_back = 0
        self._reminded = 0.0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, cause: BaseException) -> float:
        """Record a failed call; returns how long the job should wait before it is tried again."""
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            self._held_back += 1
            wait = min(LONGEST_WAIT, FIRST_WAIT * 2 ** min(self._failures - 1, 16))
            if self._since is None:
                self._since, self._reminded = now, now
                log.error(
                    "coordination store %s is unreachable (%s); jobs with locks, concurrency limits, "
                    "rate limits or uniqueness are deferred until it is back, other jobs keep running",
                    self.where, _cause(cause),
                )
            elif now - self._reminded >= REMINDER_EVERY:
                log.warning(
                    "coordination store %s still unreachable after %.0fs; %d guarded job runs deferred "
                    "since the last message (%s)",
                    self.where, now - self._since, self._held_back, _cause(cause),
                )
                self._reminded, self._held_back = now, 0
            return wait

    def succeeded(self) -> None:
        """Record a successful call: ends the outage, if there was one."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            log.warning(
                "coordination store %s is reachable again after %.0fs", self.where, time.monotonic() - self._since
            )
            self._since, self._failures, self._held_back = None, 0, 0


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"
