"""The scheduler's leader lease: one lock in the coordination store, held by renewing it.

Only the holder fires runs. A holder that dies stops renewing, and the lease expires after at most
its ``ttl``; another scheduler, which keeps trying to take it, then becomes the leader.
"""

from __future__ import annotations

import time
import uuid

from ..coordination import Coordination

LEASE_KEY = "scheduler:leader"


class Lease:
    """One scheduler's claim on the leadership. ``held`` is True only while the lease surely has
    time left by this process's monotonic clock (the store's copy may outlive it, never the reverse)."""

    def __init__(self, coordination: Coordination, ttl: float, key: str = LEASE_KEY) -> None:
        self.coordination = coordination
        self.ttl = ttl
        self.key = key
        self.token = uuid.uuid4().hex
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def refresh(self) -> bool:
        """Take the lease if it is free, or renew it if this scheduler holds it; whether it is held."""
        asked = time.monotonic()
        if self.held:
            ok = self.coordination.renew_lock(self.key, self.token, self.ttl)
        else:
            ok = self.coordination.acquire_lock(self.key, self.ttl, self.token) is not None
        # Counted from before the request, so the store's expiry is never earlier than ours.
        self._valid_until = asked + self.ttl if ok else 0.0
        return ok

    def release(self) -> None:
        """Give the lease up at once, so another scheduler takes over without waiting for it to expire."""
        if self._valid_until:
            self._valid_until = 0.0
            self.coordination.release_lock(self.key, self.token)
