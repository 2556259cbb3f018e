"""A server a worker process cannot reach (the broker, the coordination store): the fault is logged
once, then a reminder at most every ``outage_reminder`` seconds with a count of what was held back,
then the recovery; meanwhile the process waits longer and longer between attempts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

FIRST_WAIT = 1.0
LONGEST_WAIT = 30.0


class Outage:
    """One server's outage as this process sees it.

    ``what`` names the server (URL masked), ``consequence`` says what the process does meanwhile,
    ``held_back`` names what :meth:`failed` counts (reconnection attempts, deferred jobs).
    """

    def __init__(
        self,
        what: str,
        consequence: str,
        *,
        logger: logging.Logger,
        held_back: str,
        reminder_every: float = 30.0,
        longest_wait: float = LONGEST_WAIT,
    ) -> None:
        self.what = what
        self.consequence = consequence
        self.held_back = held_back
        self.reminder_every = reminder_every
        self.longest_wait = longest_wait
        self._log = logger
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        self._unreported = 0
        self._reminded = 0.0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def down_for(self) -> float:
        """Seconds since the outage began (0 when there is none)."""
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def failed(self, cause: BaseException | str) -> float:
        """Record a failed attempt; returns how long to wait before the next one (doubling from
        :data:`FIRST_WAIT` up to ``longest_wait``)."""
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            self._unreported += 1
            wait = min(self.longest_wait, FIRST_WAIT * 2 ** min(self._failures - 1, 16))
            if self._since is None:
                self._since, self._reminded, self._unreported = now, now, 0
                self._log.error("%s is unreachable (%s); %s", self.what, describe(cause), self.consequence)
            elif now - self._reminded >= self.reminder_every:
                self._log.warning(
                    "%s still unreachable after %.0fs; %d %s since the last message (%s)",
                    self.what,
                    now - self._since,
                    self._unreported,
                    self.held_back,
                    describe(cause),
                )
                self._reminded, self._unreported = now, 0
            return wait

    def succeeded(self) -> None:
        """Record a successful attempt: ends the outage, if there was one."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            self._log.warning(
                "%s is reachable again after %.0fs (%d %s in all)",
                self.what,
                time.monotonic() - self._since,
                self._failures,
                self.held_back,
            )
            self._since, self._failures, self._unreported = None, 0, 0

    def wait_before_retry(self, *, already_waited: float = 0.0, stopping: Callable[[], bool] = lambda: False) -> None:
        """While the outage lasts, sleep so that attempts come about as far apart as the outage is old
        (each wait doubles the time down, up to ``longest_wait``), less ``already_waited`` (the
        engine's own pause); returns early once ``stopping()`` says so."""
        if self._since is None:
            return
        deadline = time.monotonic() + min(self.longest_wait, self.down_for()) - already_waited
        while not stopping() and time.monotonic() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def describe(cause: BaseException | str) -> str:
    """``Type: message`` of an exception (of its cause, when it wraps one), on one line."""
    if isinstance(cause, str):
        return cause
    inner = cause.__cause__ or cause
    text = " ".join(str(inner).split()) or repr(inner)
    return f"{type(inner).__name__}: {text}"


_broker_lock = threading.Lock()
_broker: Outage | None = None


def broker_outage() -> Outage:
    """This process's outage record of the configured broker, shared by every consumer in it."""
    global _broker
    if _broker is not None:  # every consumer asks on every message it reads
        return _broker
    with _broker_lock:
        if _broker is None:
            from .config import get_settings, mask_url

            settings = get_settings()
            _broker = Outage(
                f"broker {mask_url(settings.broker_url)}",
                "this worker takes no new jobs meanwhile; it reconnects with back-off and goes on by itself",
                logger=logging.getLogger("taskbridge.broker"),
                held_back="failed reconnection attempts",
                reminder_every=settings.outage_reminder,
            )
        return _broker
