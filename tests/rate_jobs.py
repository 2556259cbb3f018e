"""Jobs for the rate-limit tests; worker processes import this module from tests/."""

from __future__ import annotations

from taskbridge import events, job
from taskbridge.testing.jobs import record


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    if isinstance(event, events.MessageEvent) and (event.job or "").startswith(__name__):
        record("outcome:" + event.kind, id=event.id, job=event.job, reason=getattr(event, "reason", None))


@job(name=f"{__name__}.paced", rate_limit="5/s")
def paced(n: int) -> None:
    """Limited to 5 runs a second across every worker; records when it started."""
    record("ran", job="paced", n=n)
