"""Jobs the Celery adapter's end-to-end tests run in real worker processes; each records with
:func:`taskbridge.testing.jobs.record` (importing it also registers the contract jobs, whose
``crashy`` these tests use)."""

from __future__ import annotations

import time
from typing import Any

from taskbridge import Backoff, events, job
from taskbridge.testing.jobs import record


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    name = getattr(event, "job", None) or ""
    if name.startswith("cq."):
        fields = {k: v for k, v in event.as_dict().items() if k not in ("event", "time", "pid", "job")}
        record("outcome:" + event.kind, job=name.removeprefix("cq."), **fields)


@job(name="cq.echo")
def echo(n: int, payload: Any = None) -> None:
    """Records that it ran with ``n``."""
    record("ran", job="echo", n=n, payload=payload)


@job(name="cq.stuck", timeout=None, hard_timeout=1.5, retry=Backoff(max_retries=1, base=0.2, jitter=False))
def stuck(token: str) -> None:
    """Never returns on its own: only the hard timeout (Celery's time_limit) ends it."""
    record("started", job="stuck", token=token)
    while True:
        time.sleep(0.05)


@job(name="cq.step")
def step(n: int, pause: float = 0.0) -> None:
    """Takes ``pause`` seconds, then records that it ran with ``n`` (a job still running when the
    broker connection drops)."""
    time.sleep(pause)
    record("ran", job="step", n=n)


@job(name="cq.boom", retry=Backoff(max_retries=1, base=0.1, jitter=False))
def boom(n: int) -> None:
    """Always raises: retried once, then dead-lettered."""
    record("started", job="boom", n=n)
    raise ValueError(f"boom {n}")


@job(name="cq.nap", timeout=None)
def nap(n: int, seconds: float) -> None:
    """Records that it started, sleeps ``seconds``, then records that it ran (a job still running
    when the worker is told to stop)."""
    record("started", job="nap", n=n)
    time.sleep(seconds)
    record("ran", job="nap", n=n)
