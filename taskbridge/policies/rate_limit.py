"""Global rate limit: a GCRA slot per job (or per ``rate_key``) reserved in the coordination store;
a short wait is slept in the worker, a longer one defers the job to its slot.

No window of one period holds more than the limit's count of starts: the store spaces slots a
little wider than ``period / count`` (:data:`~taskbridge.coordination.base.SLOT_MARGIN`), and a job
that would start later than part of that margin after its slot takes a new one."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..coordination.base import slot_margin
from ..outcomes import Defer, Outcome, Reason
from ..spec import JobSpec
from ..units import parse_rate
from .base import Draft, Policy, RunContext

SLOT_HEADER = "rate_slot"
"""Envelope header holding the time of the slot reserved on an earlier delivery (a job does not
start before it)."""
EARLIEST_HEADER = "rate_slot_earliest"
"""Envelope header holding the earliest the slot of :data:`SLOT_HEADER` may be, by the clock of the
worker that reserved it: the two differ by the time the store's reply took."""
# Seconds a deferred job comes back before its slot.
EARLY = 0.5
# Share of the slot margin (coordination.slot_margin) a job may be late for its slot when this policy
# lets it go, the store's reply included; the rest covers the steps between this policy and the job's
# first line. A job later than that takes a new slot: run, it could make one more start in a window of
# one period than the limit.
LATE_SHARE = 0.6
# New slots a job takes in one delivery when it keeps missing them (a machine so loaded that threads
# wake late); after that it is deferred to compete again rather than hold a worker thread.
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Slot:
    """A reserved slot, by this host's clock (``time.time()``), known to lie in ``[earliest, at]``
    (a store with its own clock knows no better, see :meth:`Coordination.reserve_slot`): the job
    waits until ``at``, never before the slot, and counts its lateness from ``earliest``, never
    less than the real one."""

    earliest: float
    at: float

    @classmethod
    def of(cls, headers: Mapping[str, Any]) -> Slot | None:
        """The slot an earlier delivery reserved, if the envelope holds one."""
        at, earliest = headers.get(SLOT_HEADER), headers.get(EARLIEST_HEADER, headers.get(SLOT_HEADER))
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (at, earliest)):
            return None
        return cls(float(earliest), float(at))  # type: ignore[arg-type]

    def lateness(self) -> float:
        """Seconds since the slot at the most."""
        return time.time() - self.earliest


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
        """Run the job at its slot: now, after a short sleep, or deferred to it.

        A slot reserved on an earlier delivery is kept in the envelope's headers, so a deferred
        job comes back to its own slot instead of competing again; one that comes back, or wakes,
        too late for its slot takes a new one rather than run beside the job holding the next.
        """
        rate = ctx.spec.rate_limit
        assert rate is not None
        late = slot_margin(rate) * LATE_SHARE
        slot = Slot.of(ctx.envelope.headers)
        for _ in range(ATTEMPTS):
            if slot is None or slot.lateness() > late:
                slot = self._reserve(ctx)
            wait = slot.at - time.time()
            if wait > ctx.settings.inline_wait_max:
                headers = {**ctx.envelope.headers, SLOT_HEADER: slot.at, EARLIEST_HEADER: slot.earliest}
                away = deferral(wait, ctx.settings.inline_wait_max)
                return Defer(ctx.envelope.with_changes(headers=headers), away, Reason.RATE_LIMIT)
            if wait > 0:
                ctx.waited(Reason.RATE_LIMIT, wait)
                time.sleep(wait)
            if slot.lateness() <= late:
                self._forget_slot(ctx)
                return None
            slot = None  # the reply or the wake-up came too late: that slot is spent
        self._forget_slot(ctx)
        return Defer(ctx.envelope, min(rate.interval, 1.0), Reason.RATE_LIMIT)

    @staticmethod
    def _reserve(ctx: RunContext) -> Slot:
        """Reserve the next slot in the coordination store."""
        rate = ctx.spec.rate_limit
        assert rate is not None
        key = f"{ctx.spec.name}:{ctx.keys['rate_key']}" if "rate_key" in ctx.keys else ctx.spec.name
        earliest, at = ctx.coordination.reserve_slot(key, rate)
        return Slot(earliest, at)

    @staticmethod
    def _forget_slot(ctx: RunContext) -> None:
        headers = ctx.envelope.headers
        if SLOT_HEADER in headers or EARLIEST_HEADER in headers:
            kept = {k: v for k, v in headers.items() if k not in (SLOT_HEADER, EARLIEST_HEADER)}
            ctx.envelope = ctx.envelope.with_changes(headers=kept)


def deferral(wait: float, inline_wait_max: float) -> float:
    """How long a job deferred ``wait`` seconds for its slot stays away: it comes back a little
    early and sleeps the rest, so a transport that delivers late does not make it miss the slot."""
    return wait - min(EARLY, inline_wait_max / 2)
