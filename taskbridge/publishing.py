"""Former home of enqueueing and dispatch, kept so existing imports work: enqueueing is in
:mod:`taskbridge.producer`, delay hops and dead letters in :mod:`taskbridge.dispatch`, queue names in
:mod:`taskbridge.layout`."""

from __future__ import annotations

from .dispatch import DEAD_LETTER_JOB, max_delay, publish, publish_dead_letter, schedule
from .layout import dead_letter_queue
from .policies.unique import unique_key

__all__ = [
    "DEAD_LETTER_JOB",
    "dead_letter_queue",
    "max_delay",
    "publish",
    "publish_dead_letter",
    "schedule",
    "unique_key",
]
