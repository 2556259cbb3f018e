"""Jobs for the backlog tests (move, dead letters); worker processes import this module from tests/."""

from __future__ import annotations

from pathlib import Path

from taskbridge import Backoff, events, job
from taskbridge.testing.jobs import record


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    if isinstance(event, events.MessageEvent) and (event.job or "").startswith(__name__):
        record("outcome:" + event.kind, id=event.id, attempt=event.attempt, job=event.job)


@job(name=f"{__name__}.noop")
def noop(n: int) -> None:
    """Does nothing; its outcome event says which envelope ran."""


@job(name=f"{__name__}.fails_once")
def fails_once(marker: str) -> None:
    """Fails while ``marker`` does not exist, creating it; runs fine from then on."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise ValueError(f"first run of {marker} fails on purpose")
    record("ran", job="fails_once", marker=marker)


@job(name=f"{__name__}.after")
def after(label: str) -> None:
    """A chain step."""
    record("ran", job="after", label=label)


@job(name=f"{__name__}.locked", lock="backlog-lock:{n}", timeout=30)
def locked(n: int) -> None:
    """Runs under a lock of its own argument."""


@job(name=f"{__name__}.retried", retry=Backoff(max_retries=2, base=2.0, jitter=False))
def retried(marker: str) -> None:
    """Fails on its first attempt (creating ``marker``), succeeds on its retry."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise ValueError(f"first run of {marker} fails on purpose")
