"""Jobs the kill-mid-drain tests run: each records when it starts and ends, and its outcomes."""

from __future__ import annotations

import time

from taskbridge import events, job
from taskbridge.testing.jobs import record

PREFIX = "killdrain."


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    if (getattr(event, "job", None) or "").startswith(PREFIX):
        fields = {k: v for k, v in event.as_dict().items() if k not in ("event", "time", "pid")}
        record("outcome:" + event.kind, **fields)


@job(name=f"{PREFIX}work", timeout=30)
def work(n: int, seconds: float = 0.0) -> None:
    """Records its start, takes ``seconds``, then records that it ran."""
    record("started", job="work", n=n)
    time.sleep(seconds)
    record("ran", job="work", n=n)
