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

    def update(self, job_id: str, fields: Fields, ttl: float, *, notify: bool) -> bool:
        """Set ``fields`` unless the job was cancelled (then False, nothing written); with
        ``notify``, wake every :meth:`wait` on the job. One round trip, atomic."""

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
