"""Jobs per state and queue, read from the job records for ``taskbridge status``."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..config import Settings
from ..declared import registry
from ..errors import CoordinationError
from . import get_tracker
from .record import JobRecord

SCAN_LIMIT = 100_000
"""Records read at most per snapshot; beyond it the counts are a sample."""


def tracking_on(settings: Settings) -> bool:
    """Whether any job is tracked: ``track_jobs``, the ``result_ttl`` setting, or a job declaring it."""
    if settings.track_jobs or settings.result_ttl is not None:
        return True
    return any(handle.spec.result_ttl is not None for handle in registry().values())


def state_counts(queues: Sequence[str], settings: Settings, errors: list[str]) -> dict[str, dict[str, int]] | None:
    """``{queue: {state: count}}`` over the live records (at most :data:`SCAN_LIMIT`), or None when
    tracking is off; a store that cannot be read adds to ``errors``."""
    if not tracking_on(settings):
        return None
    counts: dict[str, dict[str, int]] = {queue: {} for queue in queues}
    now = time.time()
    try:
        for fields in get_tracker(settings).store.scan(SCAN_LIMIT):
            per_queue = counts.get(fields.get("queue", ""))
            if per_queue is not None:
                state = JobRecord.from_fields("", fields).state(now)
                per_queue[state] = per_queue.get(state, 0) + 1
    except CoordinationError as exc:
        errors.append(f"job states: {exc}")
        return None
    return counts
