"""The tracking store port: where job records live (the coordination store's server, or memory)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from .record import Fields


class TrackingStore(Protocol):
    """Keeps one record per job, each expiring ``ttl`` seconds after its last write.

    Every method raises :class:`~taskbridge.errors.CoordinationError` when the store cannot be
    reached; callers decide whether that matters (enqueue and the runner carry on without it).
    """

    where: str

    def create(self, records: Sequence[tuple[str, Fields, float]]) -> None:
        """Write new records ``(id, fields, ttl)`` in one round trip."""

    def update(self, job_id: str, fields: Fields, ttl: float, *, notify: bool, guard: bool, wait: bool) -> None:
        """Set ``fields`` and the TTL; ``notify`` wakes every :meth:`wait` on the job; ``guard``
        leaves a cancelled record as it is. Without ``wait`` the write may be queued and sent with
        others (in order, within milliseconds), and a store that is down drops it with a log line."""

    def flush(self, timeout: float = 5.0) -> bool:
        """Send every queued write; False if that took longer than ``timeout``."""

    def cancelled(self, job_id: str) -> bool | None:
        """Whether the job was cancelled, answered without a round trip where the store can; None
        when it cannot tell (the store is unreachable)."""

    def cancel(self, job_id: str, now: float) -> str | None:
        """Mark the job ``cancelled`` if its state is one of ``CANCELLABLE``; returns the state it
        had (``"cancelled"`` again when it already was), or None without a record. Atomic."""

    def read(self, job_id: str) -> Fields | None:
        """The record, or None when there is none (never written, or expired)."""

    def wait(self, job_id: str, timeout: float) -> bool:
        """Block until the job is notified (True; also when it already was) or ``timeout`` passes."""

    def scan(self, limit: int) -> Iterator[Fields]:
        """Up to ``limit`` records (``queue``, ``state``, ``not_before`` and ``expires_at`` at least)."""

    def close(self) -> None:
        """Release connections."""
