"""Locks and concurrency: at most one run per lock key and at most N runs per job, cluster-wide."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..coordination import Coordination
from ..envelope import Envelope
from ..errors import CoordinationError
from ..spec import JobSpec
from .arguments import BoundCall

_LONGEST_RUN = 3600.0

log = logging.getLogger("taskbridge.runner")


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
        """Give everything back; what the store cannot take back now expires with its TTL."""
        for kind, key, token in reversed(self.held):
            try:
                if kind == "lock":
                    self.store.release_lock(key, token)
                else:
                    self.store.release_slot(key, token)
            except CoordinationError as exc:
                log.warning("%s %s could not be released (%s); it expires by itself", kind, key, exc)
        self.held.clear()


def owner_token(envelope: Envelope) -> str:
    """The token a run holds its lock and lease under: known to whoever has the message, so the
    engine can release them for a run it killed (hard timeout) instead of waiting out their TTL."""
    return f"{envelope.id}:{envelope.attempt}"


def _keys(spec: JobSpec, bound: BoundCall) -> tuple[str | None, str | None]:
    lock_key = f"lock:{spec.render_key(spec.lock, bound)}" if spec.lock else None
    slot_key = f"concurrency:{spec.name}" if spec.concurrency else None
    return lock_key, slot_key


def acquire(
    spec: JobSpec, bound: BoundCall, store: Coordination, timeout: float | None, envelope: Envelope
) -> Guard | None:
    """Take the job's lock and concurrency lease; None (nothing held) if either is busy."""
    guard = Guard(store)
    if not (spec.lock or spec.concurrency):
        return guard
    ttl = lease_ttl(spec, timeout)
    owner = owner_token(envelope)
    lock_key, slot_key = _keys(spec, bound)
    if lock_key is not None:
        token = store.acquire_lock(lock_key, ttl, owner)
        if token is None:
            return None
        guard.held.append(("lock", lock_key, token))
    if slot_key is not None and spec.concurrency:
        try:
            token = store.acquire_slot(slot_key, spec.concurrency, ttl, owner)
        except CoordinationError:
            guard.release()
            raise
        if token is None:
            guard.release()
            return None
        guard.held.append(("slot", slot_key, token))
    return guard


def release_for(spec: JobSpec, bound: BoundCall, store: Coordination, envelope: Envelope) -> None:
    """Release what a killed run of ``envelope`` held; a lock since taken by another run is kept."""
    lock_key, slot_key = _keys(spec, bound)
    owner = owner_token(envelope)
    if lock_key is not None:
        store.release_lock(lock_key, owner)
    if slot_key is not None:
        store.release_slot(slot_key, owner)
