"""Per-job "last run" state in the coordination store: the scheduled time of the last run that was
fired or passed over, moved forward by compare-and-set so that each run is decided exactly once,
whichever scheduler decides it and however often schedulers restart."""

from __future__ import annotations

from ..coordination import Coordination

STATE_TTL = 400 * 86400.0
"""How long a job's state outlives its last run: a yearly job still knows what it missed."""


def _key(job: str) -> str:
    return f"schedule:{job}"


def read(coordination: Coordination, job: str) -> str | None:
    """The job's state as stored (pass it back to :func:`advance`), or None before its first run."""
    return coordination.read_record(_key(job))


def moment(state: str) -> float:
    """The scheduled time (UNIX timestamp) a stored state holds."""
    return float(state)


def advance(coordination: Coordination, job: str, current: str | None, scheduled: float) -> str | None:
    """Move the job's state from ``current`` to ``scheduled``; the new state, or None if another
    scheduler moved it first (then this one must not fire)."""
    value = repr(float(scheduled))
    return value if coordination.swap_record(_key(job), current, value, STATE_TTL) else None
