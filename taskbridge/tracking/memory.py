"""Job records in this process's memory: the tracking store of the embedded engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from .record import CANCELLABLE, Fields

_SWEEP_INTERVAL = 60.0


class MemoryTracking:
    """Records in a dict, each with its expiry; waiting uses a condition variable, not polling."""

    where = "in-process"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._records: dict[str, tuple[Fields, float]] = {}
        self._notified: set[str] = set()
        self._next_sweep = time.monotonic() + _SWEEP_INTERVAL

    def create(self, records: Sequence[tuple[str, Fields, float]]) -> None:
        with self._cond:
            now = self._now()
            for job_id, fields, ttl in records:
                self._records[job_id] = (dict(fields), now + ttl)

    def update(self, job_id: str, fields: Fields, ttl: float, *, notify: bool, guard: bool, wait: bool) -> None:
        with self._cond:
            now = self._now()
            current = self._live(job_id, now) or {}
            if guard and current.get("state") == "cancelled":
                return
            self._records[job_id] = ({**current, **fields}, now + ttl)
            if notify:
                self._notified.add(job_id)
                self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def cancelled(self, job_id: str) -> bool | None:
        with self._cond:
            current = self._live(job_id, self._now())
            return current is not None and current.get("state") == "cancelled"

    def cancel(self, job_id: str, now: float) -> str | None:
        with self._cond:
            current = self._live(job_id, self._now())
            if current is None:
                return None
            state = current.get("state")
            if state in CANCELLABLE:
                current.update(state="cancelled", finished_at=repr(now))
                keep = float(current.get("keep", "3600"))
                self._records[job_id] = (current, self._now() + keep)
                self._notified.add(job_id)
                self._cond.notify_all()
            return state

    def read(self, job_id: str) -> Fields | None:
        with self._cond:
            current = self._live(job_id, self._now())
            return None if current is None else dict(current)

    def wait(self, job_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while job_id not in self._notified:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def scan(self, limit: int) -> Iterator[Fields]:
        with self._cond:
            now = self._now()
            live = [dict(fields) for fields, expiry in self._records.values() if expiry > now][:limit]
        yield from live

    def close(self) -> None:
        pass

    def _live(self, job_id: str, now: float) -> Fields | None:
        held = self._records.get(job_id)
        if held is None or held[1] <= now:
            return None
        return held[0]

    def _now(self) -> float:
        """The monotonic time; first drops expired records if a sweep is due (lock held)."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL
            self._records = {k: held for k, held in self._records.items() if held[1] > now}
            self._notified &= self._records.keys()
        return now
