"""The coordination store port: shared state for locks, concurrency, uniqueness and rate limits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..units import Rate

GROUP_ENDINGS = ("done", "dead", "expired", "skipped")

SLOT_MARGIN = 0.02
"""Share of a rate's period added to it when its slots are spaced: ``count`` slots span
``period * (1 + SLOT_MARGIN)``. A job starts a little after its slot (a reply on its way back, a
sleeping thread woken late, the policies after the limit), so with slots exactly ``period / count``
apart the first start of a period could be late while the ``count + 1``-th is on time. The margin
covers that lateness: as long as no start lags its slot by more than :func:`slot_margin`, no window
of one period holds more than ``count`` starts, while the rate achieved stays 98% of the limit."""

MAX_SLOT_MARGIN = 1.0
"""Seconds the margin never exceeds: a start lags its slot by milliseconds, so a long period (``1/h``)
would otherwise wait a minute more per slot for nothing."""


def slot_margin(rate: Rate) -> float:
    """Seconds a start may lag its slot before a window of one period could hold one start too many."""
    return min(rate.period * SLOT_MARGIN, MAX_SLOT_MARGIN)


def slot_spacing_microseconds(rate: Rate) -> int:
    """Whole microseconds between two slots of ``rate``, as both stores space them: one period plus
    :func:`slot_margin`, shared by the ``count`` slots, rounded up (rounded down, the slots would
    span a little less)."""
    span = round((rate.period + slot_margin(rate)) * 1_000_000)
    return max(1, math.ceil(span / rate.count - 1e-9))


def counts_of(fields: Mapping[str, int]) -> dict[str, int]:
    """A group's counts as its callback receives them: total and every ending, zeros included."""
    return {"total": fields.get("total", 0), **{name: fields.get(name, 0) for name in GROUP_ENDINGS}}


@runtime_checkable
class Coordination(Protocol):
    """Shared by every worker that must respect the same locks and limits.

    ``shared`` is False for the in-process memory store: engines that run jobs in several
    processes refuse to start with it when a job uses a lock, a concurrency limit or a rate limit.
    """

    shared: bool

    def reserve_rate(self, key: str, rate: Rate, burst: int = 1) -> float:
        """Reserve the next slot of the GCRA limiter ``key`` and return seconds until it (0 = now).

        The slot is taken by this call: a caller that waits the returned time may run without
        asking again, so a backlog of deferred jobs comes back spread over distinct slots. Slots
        are :func:`slot_spacing_microseconds` apart, so ``count + 1`` of them never fit in one period
        plus :func:`slot_margin`.
        """

    def reserve_slot(self, key: str, rate: Rate) -> tuple[float, float]:
        """Reserve the next slot of ``key`` as :meth:`reserve_rate` does, and return the earliest and
        latest this host's ``time.time()`` it may be: a store that keeps another clock knows only
        that far where its slot falls on this one (a start after the latest is never early, and its
        lateness counted from the earliest is never less than the real one)."""

    def acquire_lock(self, key: str, ttl: float, token: str | None = None) -> str | None:
        """Take the lock ``key`` for ``ttl`` seconds; return the owner token (``token`` or a new one),
        or None if it is held."""

    def release_lock(self, key: str, token: str) -> bool:
        """Release ``key`` if ``token`` still owns it; False if it expired or another owner has it."""

    def renew_lock(self, key: str, token: str, ttl: float) -> bool:
        """Extend the lock ``key`` to ``ttl`` seconds from now if ``token`` still owns it; False if it
        expired or another owner has it (a lease: the holder renews it well before it runs out)."""

    def lock_ttl(self, key: str) -> float | None:
        """Seconds until the lock ``key`` expires, or None when it is free."""

    def acquire_lease(self, key: str, limit: int, ttl: float, token: str | None = None) -> str | None:
        """Take one of ``limit`` concurrency leases on ``key`` for ``ttl`` seconds; token or None."""

    def release_lease(self, key: str, token: str) -> None:
        """Give back a concurrency lease."""

    def claim_unique(self, key: str, ttl: float) -> bool:
        """Mark ``key`` as enqueued for ``ttl`` seconds; False if it already is."""

    def release_unique(self, key: str) -> None:
        """Forget a uniqueness mark (the job finished)."""

    def group_record(self, group: str, member: str, ending: str, ttl: float) -> dict[str, int] | None:
        """Count ``member``'s final ``ending`` (done, dead, expired, skipped) in ``group``, once per
        member. Returns the counts (with ``total``) to the call whose record ends a sealed group,
        and to later calls for that same member (a redelivery of it: its callback may not be out
        yet); None to every other."""

    def group_seal(self, group: str, total: int, ttl: float) -> dict[str, int] | None:
        """Set ``group``'s total; returns the counts if every member had already ended (to one caller)."""

    def read_record(self, key: str) -> str | None:
        """The text stored under the record ``key``, or None."""

    def swap_record(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds if the record still holds ``expected``
        (None: if there is none); False, changing nothing, if it does not."""

    def write_records(self, keys: Sequence[str], value: str, ttl: float, *, newest: int | None = None) -> None:
        """Store ``value`` under each record of ``keys`` for ``ttl`` seconds, whatever they held, in
        one round trip where the store allows. ``newest``: an in-process store may keep only that
        many of the records written with it, the newest (a shared store keeps each for ``ttl``)."""

    def close(self) -> None:
        """Release connections."""
