"""The coordination store goes down under a running worker: guarded jobs wait, plain jobs keep
running, nothing runs unguarded or is lost, and the log says so once (issue: broker faults)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskbridge.testing import jobs
from taskbridge.testing.harness import KNOWN, Combination, Harness, unavailable_reason
from taskbridge.testing.proxy import TcpProxy

COMBINATIONS = ["celery-redis", "dramatiq-amqp"]


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 6379)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.processes
@pytest.mark.parametrize("name", COMBINATIONS)
def test_guarded_jobs_wait_out_a_store_outage_while_plain_jobs_keep_running(
    name: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    known = KNOWN[name]
    combination = Combination(known.engine, known.broker_url, proxy.url("redis://127.0.0.1:6379/1"))
    reason = unavailable_reason(combination)
    if reason:
        pytest.skip(reason)
    harness = Harness(combination, tmp_path)
    try:
        harness.start_workers(concurrency=2)
        jobs.locked.enqueue(key="warm", hold=0.0, n=-1)
        harness.wait_for(lambda: harness.events("ran", "locked"), 60, "the first guarded job never ran")
        pids = {e["pid"] for e in harness.events("ran", "locked")}

        proxy.cut()
        cut_at = time.time()
        for n in range(5):
            jobs.locked.enqueue(key=f"k{n}", hold=0.0, n=n)
        for n in range(60):
            jobs.echo.enqueue(n)
        harness.wait_for(
            lambda: len(harness.events("ran", "echo")) >= 60, 45, "plain jobs stopped while the store was down"
        )
        restored_at = time.time()
        proxy.restore()

        during = [e for e in harness.events("ran", "locked") if cut_at <= e["start"] <= restored_at]
        assert not during, f"guarded jobs ran without their lock while the store was down: {during}"
        harness.wait_for(
            lambda: len(harness.events("ran", "locked")) >= 6, 60, "guarded jobs did not run after the outage"
        )
        time.sleep(1.0)
        assert sorted(e["n"] for e in harness.events("ran", "locked")) == [-1, 0, 1, 2, 3, 4]
        assert sorted(e["args"][0] for e in harness.events("ran", "echo")) == list(range(60))
        ran_in = {e["pid"] for e in harness.events("ran", "locked")}
        if known.engine == "dramatiq":
            assert ran_in == pids, "the worker process was replaced during the outage"
        log = harness.worker_logs()
        store_lines = [line for line in log.splitlines() if "taskbridge.coordination" in line]
        assert any("unreachable" in line for line in store_lines), log[-3000:]
        # Once per worker process when it goes down and once when it is back; no flood.
        assert len(store_lines) <= 6, "\n".join(store_lines[:20])
        assert "Traceback" not in log, log[-4000:]
    finally:
        harness.close()
