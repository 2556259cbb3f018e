"""Jobs using the ``requires_tag`` policy of :mod:`tag_policy`; worker processes import this module
from tests/. Importing it registers the policy (the one line a project adds)."""

from __future__ import annotations

import os

from tag_policy import TAGS_ENV, RequiresTag

from taskbridge import events, job, policies
from taskbridge.testing.jobs import record

policies.register(RequiresTag(), before="timeout")


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    if isinstance(event, events.MessageEvent) and (event.job or "").startswith(__name__):
        record("outcome:" + event.kind, id=event.id, job=event.job, reason=getattr(event, "reason", None))


@job(name=f"{__name__}.render", requires_tag="gpu")
def render(n: int) -> None:
    """Runs only on a worker tagged ``gpu``; records the tags of the worker it ran on."""
    record("ran", job="render", n=n, tags=os.environ.get(TAGS_ENV))
