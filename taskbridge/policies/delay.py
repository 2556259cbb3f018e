"""Delay: an envelope that arrives before its ``not_before`` waits again (a hop), not an attempt; a
short wait is slept in the worker instead."""

from __future__ import annotations

import time

from ..envelope import Envelope
from ..outcomes import Defer, Outcome, Reason
from .base import Policy, RunContext


def remaining(envelope: Envelope, now: float) -> float:
    """Seconds until the envelope is due (0 when it is due)."""
    if envelope.not_before is None:
        return 0.0
    return max(0.0, envelope.not_before - now)


class Delay(Policy):
    name = "delay"

    def before_run(self, ctx: RunContext) -> Outcome | None:
        if ctx.envelope.not_before is None:
            return None
        due_in = remaining(ctx.envelope, time.time())
        if due_in > 0:
            if due_in > ctx.settings.inline_wait_max:
                return Defer(ctx.envelope, due_in, Reason.DELAY)
            time.sleep(due_in)
        return None
