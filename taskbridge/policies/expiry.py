"""Expiry: an envelope past its ``expires_at`` is never run (``@job(expires=...)``, counted from when
it is due)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..envelope import Envelope
from ..outcomes import Expired, Outcome
from ..spec import DEFAULT
from .base import Draft, Policy, RunContext


def is_expired(envelope: Envelope, now: float) -> bool:
    return envelope.expires_at is not None and now > envelope.expires_at


class Expiry(Policy):
    name = "expiry"
    options = ("expires",)

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        return {"expires": draft.duration("expires", given.get("expires", DEFAULT))}

    def before_run(self, ctx: RunContext) -> Outcome | None:
        if ctx.envelope.expires_at is None:
            return None
        return Expired(ctx.envelope) if is_expired(ctx.envelope, time.time()) else None
