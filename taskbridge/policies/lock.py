"""Locks and concurrency: at most one run per lock key and at most N runs per job, cluster-wide."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..coordination import Coordination
from ..job import JobSpec
from .arguments import BoundCall

_LONGEST_RUN = 3600.0


def lease_ttl(spec: JobSpec, timeout: float | None) -> float:
    """How long a lock or lease outlives a crashed worker: the job's own limit plus a margin."""
    if spec.lock_ttl is not None:
        return spec.lock_ttl
    limit = spec.hard_timeout or timeout or _LONGEST_RUN
    return limit + 30.0


@dataclass
class Guard:
    """The lock and lease a running job holds; released when the job ends."""

    store: Coordination
    held: list[tuple[str, str, str]] = field(default_factory=list)

    def release(self) -> None:
        for kind, key, token in reversed(self.held):
            if kind == "lock":
                self.store.release_lock(key, token)
            else:
                self.store.release_slot(key, token)
        self.held.clear()


def acquire(spec: JobSpec, bound: BoundCall, store: Coordination, timeout: float | None) -> Guard | None:
    """Take the job's lock and concurrency lease; None (nothing held) if either is busy."""
    guard = Guard(store)
    ttl = lease_ttl(spec, timeout)
    if spec.lock:
        lock_key = f"lock:{spec.render_key(spec.lock, bound)}"
        token = store.acquire_lock(lock_key, ttl)
        if token is None:
            return None
        guard.held.append(("lock", lock_key, token))
    if spec.concurrency:
        slot_key = f"concurrency:{spec.name}"
        token = store.acquire_slot(slot_key, spec.concurrency, ttl)
        if token is None:
            guard.release()
            return None
        guard.held.append(("slot", slot_key, token))
    return guard
