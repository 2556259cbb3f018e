"""Expiry: an envelope past its ``expires_at`` is never run."""

from __future__ import annotations

from ..envelope import Envelope


def is_expired(envelope: Envelope, now: float) -> bool:
    return envelope.expires_at is not None and now > envelope.expires_at
