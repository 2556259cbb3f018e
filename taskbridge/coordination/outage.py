"""While the coordination store is unreachable: guarded jobs wait with back-off, the log says so
once, then reminds with a count (:class:`taskbridge.outage.Outage`)."""

from __future__ import annotations

import logging

from ..outage import Outage

LONGEST_WAIT = 15.0
"""Longest deferral of a guarded job while the store is down."""


def coordination_outage(where: str, reminder_every: float = 30.0) -> Outage:
    """The outage record of the coordination store at ``where`` (its URL, masked)."""
    return Outage(
        f"coordination store {where}",
        "jobs with locks, concurrency limits, rate limits or uniqueness are deferred until it is back, "
        "other jobs keep running",
        logger=logging.getLogger("taskbridge.coordination"),
        held_back="guarded job runs deferred",
        reminder_every=reminder_every,
        longest_wait=LONGEST_WAIT,
    )
