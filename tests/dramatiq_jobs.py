"""Jobs the Dramatiq adapter's end-to-end tests run in real worker processes; each records with
:func:`taskbridge.testing.jobs.record` (importing it also registers the contract jobs, whose
``crashy`` these tests use)."""

from __future__ import annotations

import os
import time
from typing import Any

from taskbridge import Backoff, job
from taskbridge.testing.jobs import record

_hoard: list[bytes] = []


@job(name="dq.echo")
def echo(n: int, payload: Any = None) -> None:
    """Records that it ran with ``n``."""
    record("ran", job="echo", n=n, payload=payload)


@job(name="dq.stuck", timeout=1, hard_timeout=2, retry=Backoff(max_retries=0))
def stuck(n: int) -> None:
    """Ignores its soft timeout (swallows JobTimeout) and keeps running past its hard timeout."""
    record("started", job="stuck", n=n)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException as exc:
            if type(exc).__name__ != "JobTimeout":
                raise
            record("ignored_timeout", job="stuck", n=n)
    record("ran", job="stuck", n=n)


@job(name="dq.hog")
def hog(n: int, megabytes: int) -> None:
    """Keeps ``megabytes`` of memory alive in its process, then records that it ran."""
    _hoard.append(os.urandom(megabytes * 1024 * 1024))
    time.sleep(0.05)
    record("ran", job="hog", n=n)


@job(name="dq.step")
def step(n: int, pause: float = 0.0) -> None:
    """Takes ``pause`` seconds, then records that it ran with ``n``."""
    time.sleep(pause)
    record("ran", job="step", n=n)


@job(name="dq.nap", timeout=None)
def nap(n: int, seconds: float) -> None:
    """Records that it started, sleeps ``seconds``, then records that it ran (a job still running
    when the worker is told to stop)."""
    record("started", job="nap", n=n)
    time.sleep(seconds)
    record("ran", job="nap", n=n)
