"""The in-process coordination store: locks, limits and uniqueness marks for one process."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..units import Rate
from .base import counts_of, slot_spacing_microseconds

_SWEEP_INTERVAL = 60.0


@dataclass
class _Group:
    members: dict[str, str] = field(default_factory=dict)  # member id -> ending
    counts: dict[str, int] = field(default_factory=dict)
    fired: str | None = None  # the member whose record ended the group ('' for the seal)
    expiry: float = 0.0


class MemoryCoordination:
    """Coordination state held in this process's memory (``shared`` is False).

    Thread-safe and timed by the monotonic clock; it keeps the same promises as
    :class:`~taskbridge.coordination.RedisCoordination`, for the threads of one process.
    Entries that expired are dropped when touched and by a sweep at most once a minute.
    """

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> theoretical arrival time of the next slot, in whole microseconds as the Redis store
        # keeps it: float sums of an interval drift (200 x 0.005 s falls short of one second).
        self._rates: dict[str, int] = {}
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (token, expiry)
        self._leases: dict[str, dict[str, float]] = {}  # key -> {token: expiry}
        self._uniques: dict[str, float] = {}  # key -> expiry
        self._groups: dict[str, _Group] = {}
        self._records: dict[str, tuple[str, float]] = {}  # key -> (value, expiry)
        # Keys write_records stored with a bound (``newest``), oldest first (an OrderedDict drops its
        # first in O(1), a dict does not).
        self._written: OrderedDict[str, None] = OrderedDict()
        self._next_sweep = time.monotonic() + _SWEEP_INTERVAL

    def reserve_rate(self, key: str, rate: Rate, burst: int = 1) -> float:
        with self._lock:
            return self._reserve(key, rate, burst)

    def reserve_slot(self, key: str, rate: Rate) -> tuple[float, float]:
        # Slots are kept on the monotonic clock; this host's time.time() is read on either side of it
        # (and a microsecond more each way: the store rounds "now" to whole microseconds).
        with self._lock:
            before = time.time()
            wait = self._reserve(key, rate, 1)
            after = time.time()
        return before + wait - 1e-6, after + wait + 1e-6

    def _reserve(self, key: str, rate: Rate, burst: int) -> float:
        """Seconds until the slot reserved (lock held)."""
        interval = slot_spacing_microseconds(rate)
        now = round(self._now() * 1_000_000)
        tat = max(self._rates.get(key, now), now)
        self._rates[key] = tat + interval
        return max(0, tat - interval * (burst - 1) - now) / 1_000_000

    def acquire_lock(self, key: str, ttl: float, token: str | None = None) -> str | None:
        with self._lock:
            now = self._now()
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return None
            token = token or uuid.uuid4().hex
            self._locks[key] = (token, now + ttl)
            return token

    def release_lock(self, key: str, token: str) -> bool:
        with self._lock:
            now = self._now()
            held = self._locks.get(key)
            if held is None or held[0] != token:
                return False
            del self._locks[key]
            return held[1] > now

    def renew_lock(self, key: str, token: str, ttl: float) -> bool:
        with self._lock:
            now = self._now()
            held = self._locks.get(key)
            if held is None or held[0] != token or held[1] <= now:
                return False
            self._locks[key] = (token, now + ttl)
            return True

    def lock_ttl(self, key: str) -> float | None:
        with self._lock:
            now = self._now()
            held = self._locks.get(key)
            if held is None or held[1] <= now:
                return None
            return held[1] - now

    def acquire_lease(self, key: str, limit: int, ttl: float, token: str | None = None) -> str | None:
        with self._lock:
            now = self._now()
            leases = {token: expiry for token, expiry in self._leases.get(key, {}).items() if expiry > now}
            if len(leases) >= limit:
                self._leases[key] = leases
                return None
            token = token or uuid.uuid4().hex
            leases[token] = now + ttl
            self._leases[key] = leases
            return token

    def release_lease(self, key: str, token: str) -> None:
        with self._lock:
            leases = self._leases.get(key)
            if leases is not None:
                leases.pop(token, None)
                if not leases:
                    del self._leases[key]

    def claim_unique(self, key: str, ttl: float) -> bool:
        with self._lock:
            now = self._now()
            if self._uniques.get(key, now) > now:
                return False
            self._uniques[key] = now + ttl
            return True

    def release_unique(self, key: str) -> None:
        with self._lock:
            self._uniques.pop(key, None)

    def group_record(self, group: str, member: str, ending: str, ttl: float) -> dict[str, int] | None:
        with self._lock:
            state = self._group(group, ttl)
            if member not in state.members:
                state.members[member] = ending
                state.counts[ending] = state.counts.get(ending, 0) + 1
            return self._group_ended(state, member)

    def group_seal(self, group: str, total: int, ttl: float) -> dict[str, int] | None:
        with self._lock:
            state = self._group(group, ttl)
            state.counts["total"] = total
            return self._group_ended(state, "")

    def _group(self, group: str, ttl: float) -> _Group:
        now = self._now()
        state = self._groups.get(group)
        if state is None or state.expiry <= now:
            state = self._groups[group] = _Group()
        state.expiry = now + ttl
        return state

    @staticmethod
    def _group_ended(state: _Group, caller: str) -> dict[str, int] | None:
        total = state.counts.get("total")
        if total is None or len(state.members) < total or state.fired not in (None, caller):
            return None
        state.fired = caller
        return counts_of(state.counts)

    def read_record(self, key: str) -> str | None:
        with self._lock:
            held = self._records.get(key)
            return held[0] if held is not None and held[1] > self._now() else None

    def swap_record(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        with self._lock:
            now = self._now()
            held = self._records.get(key)
            current = held[0] if held is not None and held[1] > now else None
            if current != expected:
                return False
            self._records[key] = (value, now + ttl)
            self._written.pop(key, None)  # a record swapped in is not dropped for room
            return True

    def write_records(self, keys: Sequence[str], value: str, ttl: float, *, newest: int | None = None) -> None:
        with self._lock:
            expiry = self._now() + ttl
            for key in keys:
                self._records[key] = (value, expiry)
            if newest is None:
                return
            written = self._written
            for key in keys:
                written[key] = None
                written.move_to_end(key)
            while len(written) > newest:
                self._records.pop(written.popitem(last=False)[0], None)

    def close(self) -> None:
        pass

    def _now(self) -> float:
        """The monotonic time; first drops every expired entry if a sweep is due (lock held)."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL
            self._rates = {key: tat for key, tat in self._rates.items() if tat > now * 1_000_000}
            self._locks = {key: held for key, held in self._locks.items() if held[1] > now}
            self._uniques = {key: expiry for key, expiry in self._uniques.items() if expiry > now}
            self._groups = {key: state for key, state in self._groups.items() if state.expiry > now}
            self._records = {key: held for key, held in self._records.items() if held[1] > now}
            self._written = OrderedDict((key, None) for key in self._written if key in self._records)
            self._leases = {
                key: live
                for key, leases in self._leases.items()
                if (live := {token: expiry for token, expiry in leases.items() if expiry > now})
            }
        return now
