"""Delay: an envelope that arrives before its ``not_before`` waits again (a hop), not an attempt."""

from __future__ import annotations

from ..envelope import Envelope


def remaining(envelope: Envelope, now: float) -> float:
    """Seconds until the envelope is due (0 when it is due)."""
    if envelope.not_before is None:
        return 0.0
    return max(0.0, envelope.not_before - now)
