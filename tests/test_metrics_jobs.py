"""Jobs the metrics, status and error-reporting tests run: one per outcome. Workers import this
module (``taskbridge worker test_metrics_jobs`` with ``tests/`` on PYTHONPATH); it holds no tests.

With ``TB_OBSERVED_SEED`` set, importing it enqueues a small known workload, so a worker on the
embedded engine (whose queues live in its own process) has something to run and count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from taskbridge import Backoff, job
from taskbridge.testing.jobs import record

SEED_ENV = "TB_OBSERVED_SEED"
PAUSED_SEED_ENV = "TB_OBSERVED_PAUSED"
"""With it set to seconds, importing this module enqueues one ``observed.holder`` (key "paused") that
runs that long."""


@job(name="observed.ok")
def ok(n: int, pause: float = 0.0) -> None:
    """Returns, after ``pause`` seconds; records the process it ran in."""
    time.sleep(pause)
    record("ran", job="observed.ok", n=n)


@job(name="observed.fails")
def fails() -> None:
    """Raises an error that is not retried: dead at once."""
    raise ValueError("fails on purpose")


@job(name="observed.flaky", retry=Backoff(max_retries=1, base=0.1, jitter=False, on=(OSError,)))
def flaky() -> None:
    """Raises a retriable error: retried once, then dead."""
    raise OSError("flaky on purpose")


@job(name="observed.slow", timeout=0.5)
def slow() -> None:
    """Runs past its timeout: JobTimeout, then dead."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.02)


@job(name="observed.hourly", rate_limit="1/h")
def hourly(n: int) -> None:
    """One run an hour: a second one in a row is deferred by the rate limit."""


@job(name="observed.paced", rate_limit="1/3s")
def paced(n: int) -> None:
    """One run per 3 seconds: a second one in a row waits inline (with inline_wait_max >= 3)."""


@job(name="observed.holder", lock="observed:{key}", timeout=60)
def holder(key: str, hold: float) -> None:
    """Holds the lock ``observed:{key}`` for ``hold`` seconds."""
    record("holding", job="observed.holder", key=key)
    time.sleep(hold)


@job(name="observed.waits_for_lock", lock="observed:{key}")
def waits_for_lock(key: str) -> None:
    """Deferred while ``observed:{key}`` is held."""


@job(name="observed.skips_on_lock", lock="observed:{key}", on_lock="skip")
def skips_on_lock(key: str) -> None:
    """Skipped while ``observed:{key}`` is held."""


@job(name="observed.rendezvous", timeout=60)
def rendezvous(token: str) -> None:
    """Waits (up to 30s) until a run of it has started in a second process: two of them, enqueued
    first, prove that two worker processes run jobs, however slowly each one starts."""
    from taskbridge.testing.jobs import EVENTS_ENV

    record("met", job="observed.rendezvous", token=token)
    path = Path(os.environ[EVENTS_ENV])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in path.read_text().splitlines() if '"met"' in line]
        if len({e["pid"] for e in lines if e.get("event") == "met"}) >= 2:
            return
        time.sleep(0.05)
    raise TimeoutError("no run of observed.rendezvous started in a second process")


def seed() -> None:
    """A workload with known counts for the embedded engine: 3 done, 1 dead (error), 1 retried then
    dead, 1 expired, 1 dead (invalid arguments)."""
    from taskbridge import Envelope, get_engine, get_settings

    for n in range(3):
        ok.enqueue(n)
    fails.enqueue()
    flaky.enqueue()
    ok.options(expires="1ms").enqueue(99)
    time.sleep(0.01)
    queue = ok.spec.resolved_queue(get_settings().default_queue)
    get_engine().publish([Envelope(job="observed.ok", queue=queue, args=[])], 0)


if os.environ.get(SEED_ENV):
    seed()
if os.environ.get(PAUSED_SEED_ENV):
    holder.enqueue("paused", float(os.environ[PAUSED_SEED_ENV]))
