"""Global rate limit: a GCRA slot per job (or per key) reserved in the coordination store."""

from __future__ import annotations

from ..coordination import Coordination
from ..envelope import Envelope
from ..spec import JobSpec
from .arguments import BoundCall

SLOT_HEADER = "rate_slot"


def key(spec: JobSpec, bound: BoundCall) -> str:
    if spec.rate_key:
        return f"{spec.name}:{spec.render_key(spec.rate_key, bound)}"
    return spec.name


def wait(spec: JobSpec, envelope: Envelope, bound: BoundCall, store: Coordination, now: float) -> float:
    """Seconds this envelope must wait for its rate-limit slot (0 = run now).

    A slot reserved on an earlier delivery is kept in the envelope's headers, so a deferred
    job comes back to its own slot instead of competing again.
    """
    if spec.rate_limit is None:
        return 0.0
    slot = envelope.headers.get(SLOT_HEADER)
    if isinstance(slot, int | float):
        return max(0.0, slot - now)
    return store.reserve_rate(key(spec, bound), spec.rate_limit)
