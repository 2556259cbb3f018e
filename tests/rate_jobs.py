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


@job(name=f"{__name__}.per_tenant", rate_limit="3/s", rate_key="{tenant}")
def per_tenant(tenant: str, n: int) -> None:
    """Limited to 3 runs a second for each tenant; records when it started."""
    record("ran", job="per_tenant", tenant=tenant, n=n)
