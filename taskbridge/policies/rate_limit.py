"""Global rate limit: a GCRA slot per job (or per ``rate_key``) reserved in the coordination store;
a short wait is slept in the worker, a longer one defers the job to its slot."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..outcomes import Defer, Outcome, Reason
from ..spec import JobSpec
from ..units import parse_rate
from .base import Draft, Policy, RunContext

SLOT_HEADER = "rate_slot"
"""Envelope header holding the time of the slot reserved on an earlier delivery."""
# Seconds a deferred job comes back before its slot, and how late it may be for it: a job that
# starts later than its slot shortens the gap to the job holding the next one, so a job back after
# its slot (beyond a thread's usual wake-up jitter) takes a new slot.
EARLY = 0.5
LATE = 0.002


class RateLimit(Policy):
    name = "rate_limit"
    options = ("rate_limit", "rate_key")
    templates = ("rate_key",)
    coordinated = True

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        rate, key = given.get("rate_limit"), given.get("rate_key")
        parsed = None
        if rate is not None:
            try:
                parsed = parse_rate(rate)
            except ValueError as exc:
                raise draft.invalid(f"option {exc}") from None
        if key is not None:
            draft.template("rate_key", key)
            if parsed is None:
                raise draft.invalid("option rate_key= needs rate_limit= as well")
        return {"rate_limit": parsed, "rate_key": key}

    def applies(self, spec: JobSpec) -> bool:
        return spec.rate_limit is not None

    def before_run(self, ctx: RunContext) -> Outcome | None:
        wait = self._wait(ctx)
        envelope = ctx.envelope
        if wait > 0:
            if wait > ctx.settings.inline_wait_max:
                slot = {**envelope.headers, SLOT_HEADER: time.time() + wait}
                away = deferral(wait, ctx.settings.inline_wait_max)
                return Defer(envelope.with_changes(headers=slot), away, Reason.RATE_LIMIT)
            ctx.waited(Reason.RATE_LIMIT, wait)
            time.sleep(wait)
        if SLOT_HEADER in envelope.headers:
            headers = {k: v for k, v in envelope.headers.items() if k != SLOT_HEADER}
            ctx.envelope = envelope.with_changes(headers=headers)
        return None

    def _wait(self, ctx: RunContext) -> float:
        """Seconds this envelope must wait for its slot (0 = run now).

        A slot reserved on an earlier delivery is kept in the envelope's headers, so a deferred
        job comes back to its own slot instead of competing again; a job back after its slot has
        passed reserves a new one rather than run beside the job holding the next.
        """
        rate = ctx.spec.rate_limit
        assert rate is not None
        now = time.time()
        slot = ctx.envelope.headers.get(SLOT_HEADER)
        if isinstance(slot, int | float) and now - slot <= min(LATE, rate.interval / 2):
            return max(0.0, slot - now)
        # No slot yet, or it passed before the job came back: running now would crowd the jobs
        # holding the next slots, so it takes a new one.
        key = f"{ctx.spec.name}:{ctx.keys['rate_key']}" if "rate_key" in ctx.keys else ctx.spec.name
        return ctx.coordination.reserve_rate(key, rate)


def deferral(wait: float, inline_wait_max: float) -> float:
    """How long a job deferred ``wait`` seconds for its slot stays away: it comes back a little
    early and sleeps the rest, so a transport that delivers late does not make it miss the slot."""
    return wait - min(EARLY, inline_wait_max / 2)
