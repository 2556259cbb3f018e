"""The coordination store goes down under a running worker: guarded jobs wait, plain jobs keep
running, nothing runs unguarded or is lost, and the log says so once (issue: broker faults)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

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


KEYS = 3
PER_KEY = 4
LIMITED = 40


@pytest.mark.processes
@pytest.mark.parametrize(
    "name", ["celery-redis", "celery-amqp", "celery-sqs", "dramatiq-redis", "dramatiq-amqp", "dramatiq-sqs"]
)
def test_a_store_cut_while_locks_are_held_defers_the_jobs_runs_them_later_and_leaves_no_lock_forever(
    name: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    """The store is cut while locked jobs hold their locks (their release fails) and rate-limited
    jobs wait for slots: every job runs later, never two of one key at once, and every lock key
    left in the store expires."""

    known = KNOWN[name]
    combination = Combination(known.engine, known.broker_url, proxy.url("redis://127.0.0.1:6379/1"))
    reason = unavailable_reason(combination)
    if reason:
        pytest.skip(reason)
    harness = Harness(combination, tmp_path)
    try:
        harness.start_workers(concurrency=4)
        for n in range(KEYS * PER_KEY):
            jobs.locked.enqueue(key=f"k{n % KEYS}", hold=1.0, n=n)
        for n in range(LIMITED):
            jobs.limited.enqueue(n)
        harness.wait_for(lambda: len(harness.events("ran", "locked")) >= 2, 90, "the locked jobs never ran")
        time.sleep(0.5)  # into the next jobs' hold: their locks are taken when the store goes
        proxy.cut()
        time.sleep(4.0)
        proxy.restore()
        assert len(harness.events("ran", "locked")) < KEYS * PER_KEY, "the drain ended before the cut"

        harness.wait_for(
            lambda: len({e["n"] for e in harness.events("ran", "locked")}) == KEYS * PER_KEY,
            120,
            "locked jobs were lost or stayed locked out after the store came back",
        )
        harness.wait_for(
            lambda: len({e["n"] for e in harness.events("ran", "limited")}) == LIMITED,
            60,
            "rate-limited jobs were lost after the store came back",
        )
        runs = harness.events("ran", "locked")
        for key in {e["key"] for e in runs}:
            spans = sorted((e["start"], e["end"]) for e in runs if e["key"] == key)
            overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
            assert not overlaps, f"two jobs of {key} ran at once: {overlaps}"
        store = redis.Redis.from_url("redis://127.0.0.1:6379/1")
        try:
            namespace = harness.env["TASKBRIDGE_NAMESPACE"]
            left = {key: store.pttl(key) for key in store.scan_iter(f"{namespace}*lock*")}
        finally:
            store.close()
        assert all(ttl > 0 for ttl in left.values()), f"lock keys that never expire: {left}"
        log = harness.worker_logs()
        noticed = [line for line in log.splitlines() if "taskbridge.coordination" in line and "unreachable" in line]
        assert noticed, f"the workers never met the cut store: the test proves nothing\n{log[-3000:]}"
        assert "Traceback" not in log, log[-4000:]
    finally:
        harness.close()
