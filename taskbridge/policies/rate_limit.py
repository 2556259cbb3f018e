"""Global rate limit: a GCRA slot per job (or per key) reserved in the coordination store."""

from __future__ import annotations

from ..coordination import Coordination
from ..envelope import Envelope
from ..job import JobSpec
from .arguments import BoundCall

SLOT_HEADER = "rate_slot"
# Seconds a deferred job comes back before its slot, and how late it may be for it.
EARLY = 0.5
LATE = 0.05


def key(spec: JobSpec, bound: BoundCall) -> str:
    if spec.rate_key:
        return f"{spec.name}:{spec.render_key(spec.rate_key, bound)}"
    return spec.name


def wait(spec: JobSpec, envelope: Envelope, bound: BoundCall, store: Coordination, now: float) -> float:
    """Seconds this envelope must wait for its rate-limit slot (0 = run now).

    A slot reserved on an earlier delivery is kept in the envelope's headers, so a deferred
    job comes back to its own slot instead of competing again; a job back after its slot has
    passed reserves a new one rather than run beside the job holding the next.
    """
    if spec.rate_limit is None:
        return 0.0
    slot = envelope.headers.get(SLOT_HEADER)
    if isinstance(slot, int | float) and now - slot <= min(LATE, spec.rate_limit.interval / 2):
        return max(0.0, slot - now)
    # No slot yet, or it passed before the job came back: running now would crowd the jobs
    # holding the next slots, so it takes a new one.
    return store.reserve_rate(key(spec, bound), spec.rate_limit)


def deferral(wait: float, inline_wait_max: float) -> float:
    """How long a job deferred ``wait`` seconds for its slot stays away: it comes back a little
    early and sleeps the rest, so a transport that delivers late does not make it miss the slot."""
    return wait - min(EARLY, inline_wait_max / 2)
