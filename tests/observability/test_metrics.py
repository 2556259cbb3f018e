"""Metrics: every outcome counted exactly, read over HTTP from /metrics, on every available combination;
counts add up across worker processes."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

import test_metrics_jobs as jobs
from prometheus_client import CollectorRegistry
from support import TESTS_DIR, open_harness

from taskbridge import Envelope, events
from taskbridge import metrics as tb_metrics
from taskbridge.coordination.base import slot_margin
from taskbridge.layout import dead_letter_queue
from taskbridge.outcomes import Reason
from taskbridge.status import Sample, read_metrics
from taskbridge.testing import KNOWN, Harness
from taskbridge.units import Rate

COMBINATIONS = list(KNOWN)
PROCESS_COMBINATIONS = [name for name in KNOWN if name != "memory"]

# Long visibility timeout and lock retry, no delay cap: the deferred jobs of the scenario stay
# deferred while the test runs, so every count is exact. Inline waits up to 4s (the paced job).
OVERRIDES = {
    "TASKBRIDGE_VISIBILITY_TIMEOUT": "3600",
    "TASKBRIDGE_MAX_NATIVE_DELAY": "none",
    "TASKBRIDGE_LOCK_RETRY": "600",
    "TASKBRIDGE_INLINE_WAIT_MAX": "4",
    "TASKBRIDGE_DEFAULT_TIMEOUT": "60",
}


# --- helpers shared with the status tests ------------------------------------------------------


def harness_for(name: str, tmp_path: Path) -> contextlib.AbstractContextManager[Harness]:
    """A contract harness on combination ``name`` with :data:`OVERRIDES`, whose workers import
    ``test_metrics_jobs``; skipped (failed under CI=true) when the combination is unavailable."""
    return open_harness(name, tmp_path, "test_metrics_jobs", OVERRIDES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(h: Harness, *, metrics_port: int, concurrency: int = 2, env: dict[str, str] | None = None) -> None:
    """One ``taskbridge worker test_metrics_jobs --metrics-port`` process, managed by the harness."""
    h.start_workers(1, concurrency, args=["--metrics-port", str(metrics_port)], env=env)


def scrape(url: str) -> list[Sample]:
    """The samples of ``url``, or [] while the server is not up yet (or too slow to answer: a
    scrape reads queue depths from the broker)."""
    try:
        return read_metrics(url, timeout=10)
    except OSError:
        return []


def series(samples: list[Sample], name: str, queue: str, *labels: str) -> dict[tuple[str, ...], float]:
    """``{(job, *labels): value}`` of metric ``name`` on ``queue``, zero values left out."""
    found: dict[tuple[str, ...], float] = {}
    for s in samples:
        if s.name == name and s.labels.get("queue") == queue and s.value:
            found[(s.labels["job_name"], *(s.labels[k] for k in labels))] = s.value
    return found


def gauge(samples: list[Sample], name: str, queue: str) -> float | None:
    return next((s.value for s in samples if s.name == name and s.labels.get("queue") == queue), None)


def wait_until(h: Harness, check: Callable[[], Any], timeout: float, what: str) -> Any:
    return h.wait_for(check, timeout, what)


# --- the scenario: one job per outcome ---------------------------------------------------------

EXPECTED_FINISHED = {
    ("observed.holder", "done", "none"): 1,
    ("observed.waits_for_lock", "deferred", "lock"): 1,
    ("observed.skips_on_lock", "skipped", "lock"): 1,
    ("observed.ok", "done", "none"): 3,
    ("observed.ok", "expired", "none"): 1,
    ("observed.ok", "dead", "invalid"): 1,
    ("observed.nope", "dead", "invalid"): 1,
    ("observed.fails", "dead", "error"): 1,
    ("observed.flaky", "retried", "error"): 1,
    ("observed.flaky", "dead", "error"): 1,
    ("observed.slow", "dead", "timeout"): 1,
    ("observed.hourly", "done", "none"): 1,
    ("observed.hourly", "deferred", "rate_limit"): 1,
    ("observed.paced", "done", "none"): 2,
}
EXPECTED_STARTED = {
    ("observed.holder",): 1,
    ("observed.ok",): 3,
    ("observed.fails",): 1,
    ("observed.flaky",): 2,
    ("observed.slow",): 1,
    ("observed.hourly",): 1,
    ("observed.paced",): 2,
}
EXPECTED_ENQUEUED = {
    ("observed.ok",): 4,
    ("observed.holder",): 1,
    ("observed.waits_for_lock",): 1,
    ("observed.skips_on_lock",): 1,
    ("observed.fails",): 1,
    ("observed.flaky",): 1,
    ("observed.slow",): 1,
    ("observed.hourly",): 2,
    ("observed.paced",): 2,
}
EXPECTED_EXCEPTIONS = {
    ("observed.fails", "ValueError"): 1,
    ("observed.flaky", "OSError"): 2,
    ("observed.slow", "JobTimeout"): 1,
}
EXPECTED_DEAD_LETTERS = 5


def run_scenario(h: Harness, url: str, start_workers: Callable[[], None]) -> list[Sample]:
    """Enqueue one job per outcome, run them, and return /metrics once every outcome is in."""
    jobs.ok.options(expires="1ms").enqueue(99)
    time.sleep(0.05)
    start_workers()
    jobs.holder.enqueue("k", 3.0)
    wait_until(h, lambda: h.events("holding", "observed.holder"), 60, "the lock holder never started")
    jobs.waits_for_lock.enqueue("k")
    jobs.skips_on_lock.enqueue("k")
    for n in range(3):
        jobs.ok.enqueue(n)
    jobs.fails.enqueue()
    jobs.flaky.enqueue()
    jobs.slow.enqueue()
    jobs.hourly.enqueue(1)
    jobs.hourly.enqueue(2)
    jobs.paced.enqueue(1)
    jobs.paced.enqueue(2)
    h.engine.publish([Envelope(job="observed.ok", queue=h.queue, args=[])], 0)
    h.engine.publish([Envelope(job="observed.nope", queue=h.queue)], 0)
    total = sum(EXPECTED_FINISHED.values())

    def settled() -> list[Sample] | None:
        samples = scrape(url)
        finished = series(samples, "taskbridge_jobs_finished_total", h.queue, "outcome", "reason")
        running = series(samples, "taskbridge_jobs_in_progress", h.queue)
        return samples if sum(finished.values()) >= total and not running else None

    wait_until(h, settled, 90, f"not every outcome reached {url}")
    time.sleep(0.5)  # anything unexpected arriving late would show now
    # depths are read from the broker at scrape time, cached for a second (SQS: approximate)
    return wait_until(
        h,
        lambda: (s := scrape(url)) and gauge(s, "taskbridge_dead_letter_depth", h.queue) == EXPECTED_DEAD_LETTERS and s,
        10,
        "the dead-letter depth gauge never showed every dead letter",
    )


def check_scenario(samples: list[Sample], queue: str, *, enqueued_here: bool) -> None:
    assert series(samples, "taskbridge_jobs_finished_total", queue, "outcome", "reason") == EXPECTED_FINISHED
    assert series(samples, "taskbridge_jobs_started_total", queue) == EXPECTED_STARTED
    assert series(samples, "taskbridge_job_exceptions_total", queue, "exception") == EXPECTED_EXCEPTIONS
    assert series(samples, "taskbridge_job_duration_seconds_count", queue) == EXPECTED_STARTED
    assert series(samples, "taskbridge_job_wait_seconds_count", queue) == EXPECTED_STARTED
    assert series(samples, "taskbridge_jobs_in_progress", queue) == {}
    assert series(samples, "taskbridge_lock_contention_total", queue, "action") == {
        ("observed.waits_for_lock", "deferred"): 1,
        ("observed.skips_on_lock", "skipped"): 1,
    }
    limited = series(samples, "taskbridge_rate_limited_total", queue, "how")
    # A job woken later than its slot allows waits for a new slot (policies.rate_limit), each wait counted:
    # on a loaded host the paced job may wait twice.
    paced_waits = limited.pop(("observed.paced", "inline"), 0)
    assert limited == {("observed.hourly", "deferred"): 1} and 1 <= paced_waits <= 3, (limited, paced_waits)
    waited = series(samples, "taskbridge_rate_limit_wait_seconds_total", queue)
    # One period and its slot margin (taskbridge.coordination.base.slot_margin) at most per wait.
    assert 3500 < waited[("observed.hourly",)] <= 3600 + slot_margin(Rate(1, 3600))
    assert 1.5 < waited[("observed.paced",)] <= paced_waits * (3.0 + slot_margin(Rate(1, 3)))
    enqueued = series(samples, "taskbridge_jobs_enqueued_total", queue)
    assert enqueued == (EXPECTED_ENQUEUED if enqueued_here else {})
    assert gauge(samples, "taskbridge_dead_letter_depth", queue) == EXPECTED_DEAD_LETTERS
    assert gauge(samples, "taskbridge_queue_depth", queue) is not None


def test_outcome_reasons_are_a_small_fixed_set() -> None:
    reason = tb_metrics.outcome_reason
    about = {"job": "j", "id": "1", "attempt": 1, "queue": "q"}
    failed = {**about, "duration": 0.1, "timed_out": False}
    assert reason(events.DoneEvent(**about, duration=0.1)) == "none"
    assert reason(events.DeferredEvent(**about, delay=1.0, reason=Reason.RATE_LIMIT)) == "rate_limit"
    assert reason(events.DeferredEvent(**about, delay=1.0, reason=Reason.LOCK_BUSY)) == "lock"
    assert reason(events.DeferredEvent(**about, delay=1.0, reason=Reason.DELAY)) == "delay"
    assert reason(events.SkippedEvent(**about, reason=Reason.LOCK_BUSY)) == "lock"
    assert reason(events.RetriedEvent(**failed, delay=1.0, error="OSError: x", error_type="OSError")) == "error"
    timed_out = {**failed, "timed_out": True}
    assert reason(events.DeadEvent(**timed_out, reason="failed", error_type="JobTimeout")) == "timeout"
    assert reason(events.DeadEvent(**failed, reason="failed", error_type="WorkerLost")) == "worker_lost"
    assert reason(events.DeadEvent(**failed, reason="unknown job 'x'", error_type=None)) == "invalid"
    assert reason(events.DeferredEvent(**about, delay=1.0, reason=Reason.STORE_UNREACHABLE)) == "coordination"
    assert reason(events.SkippedEvent(**about, reason=Reason.CANCELLED)) == "other"
    assert {reason(events.DeferredEvent(**about, delay=1.0, reason=r)) for r in Reason} <= set(tb_metrics.REASONS)


def test_outcome_labels_are_plain_strings() -> None:
    """Reasons are :class:`Reason` members; the labels are their plain metric words."""
    registry = CollectorRegistry()
    m = tb_metrics.Metrics(registry)
    m.handle(events.DeferredEvent(job="j", queue="q", id="1", attempt=1, reason=Reason.RATE_LIMIT, delay=2.0))
    assert (
        registry.get_sample_value(
            "taskbridge_jobs_finished_total",
            {"job_name": "j", "queue": "q", "outcome": "deferred", "reason": "rate_limit"},
        )
        == 1
    )
    assert (
        registry.get_sample_value("taskbridge_rate_limited_total", {"job_name": "j", "queue": "q", "how": "deferred"})
        == 1
    )
    assert registry.get_sample_value("taskbridge_rate_limit_wait_seconds_total", {"job_name": "j", "queue": "q"}) == 2


@pytest.mark.parametrize("name", COMBINATIONS)
def test_every_outcome_is_counted_exactly_on_metrics(name: str, tmp_path: Path) -> None:
    with harness_for(name, tmp_path) as h:
        producer = tb_metrics.Metrics(CollectorRegistry())
        events.subscribe(producer.handle)
        server = None
        try:
            if h.multi_process:
                port = free_port()
                url = f"http://127.0.0.1:{port}/metrics"

                def start() -> None:
                    start_worker(h, metrics_port=port)

                samples = run_scenario(h, url, start)
                check_scenario(samples, h.queue, enqueued_here=False)
                producer_samples = list(_samples_of(producer.registry))
                assert series(producer_samples, "taskbridge_jobs_enqueued_total", h.queue) == EXPECTED_ENQUEUED
                # the broker's password (amqp: guest) never reaches a log line
                assert "guest:guest" not in h.worker_logs()
            else:
                depth = tb_metrics.QueueDepthCollector([h.queue], h.engine.depth, dead_letter_queue)
                server = tb_metrics.serve(0, "127.0.0.1", registry=producer.registry, depth=depth)
                url = f"http://127.0.0.1:{server.port}/metrics"
                samples = run_scenario(h, url, lambda: h.start_workers(1, concurrency=2))
                check_scenario(samples, h.queue, enqueued_here=True)
                # the two deferred jobs wait in the embedded engine's delay queue
                assert gauge(samples, "taskbridge_queue_depth", h.queue) == 2
        finally:
            events.unsubscribe(producer.handle)
            if server is not None:
                server.stop()


def _samples_of(registry: CollectorRegistry) -> Iterator[Sample]:
    for family in registry.collect():
        for s in family.samples:
            yield Sample(s.name, dict(s.labels), float(s.value))


@pytest.mark.parametrize("name", PROCESS_COMBINATIONS)
def test_counts_add_up_across_two_worker_processes(name: str, tmp_path: Path) -> None:
    count = 14
    with harness_for(name, tmp_path) as h:
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        # rendezvous jobs first: each waits until one runs in a second process. Four, because a
        # process may hold more than the one it runs (Dramatiq prefetches 2 per thread).
        for token in "abcd":
            jobs.rendezvous.enqueue(token)
        jobs.ok.enqueue_many({"n": n, "pause": 0.05} for n in range(count))
        start_worker(
            h,
            metrics_port=port,
            concurrency=2,
            env={"TASKBRIDGE_WORKER_PROCESSES": "2", "TASKBRIDGE_WORKER_THREADS": "1"},
        )

        def done() -> list[Sample] | None:
            samples = scrape(url)
            finished = series(samples, "taskbridge_jobs_finished_total", h.queue, "outcome", "reason")
            return samples if sum(finished.values()) >= count + 4 else None

        wait_until(h, done, 90, "not every job was counted")
        time.sleep(0.3)  # anything unexpected arriving late would show now
        samples = wait_until(h, done, 30, "/metrics stopped answering")
        pids = {e["pid"] for e in h.events("met", "observed.rendezvous")}
        assert len(pids) == 2, f"the rendezvous jobs did not run in two processes: {pids}"
        assert len(h.events("ran", "observed.ok")) == count
        assert series(samples, "taskbridge_jobs_finished_total", h.queue, "outcome", "reason") == {
            ("observed.rendezvous", "done", "none"): 4,
            ("observed.ok", "done", "none"): count,
        }
        assert series(samples, "taskbridge_jobs_started_total", h.queue) == {
            ("observed.rendezvous",): 4,
            ("observed.ok",): count,
        }
        assert series(samples, "taskbridge_job_duration_seconds_count", h.queue) == {
            ("observed.rendezvous",): 4,
            ("observed.ok",): count,
        }


def test_the_dashboard_uses_only_metrics_taskbridge_exports() -> None:
    registry = CollectorRegistry()
    m = tb_metrics.Metrics(registry)
    about = {"job": "j", "queue": "q", "id": "1", "attempt": 1}
    for event in (
        events.EnqueuedEvent(job="j", queue="q", count=1, delay=0.0),
        events.StartedEvent(**about, enqueued_at=1.0, time=2.0),
        events.WaitedEvent(**about, reason=Reason.RATE_LIMIT, wait=0.5),
        events.DeadEvent(**about, reason="failed", error_type="E", duration=0.1, timed_out=False),
        events.SkippedEvent(**about, reason=Reason.LOCK_BUSY),
    ):
        m.handle(event)
    depth = tb_metrics.QueueDepthCollector(["q"], lambda q: 0, dead_letter_queue)
    registry.register(depth)
    exported = {s.name for family in registry.collect() for s in family.samples}
    dashboard = (TESTS_DIR.parent / "dashboards" / "taskbridge.json").read_text()
    exprs = [t["expr"] for p in json.loads(dashboard)["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\btaskbridge_\w+", expr)}
    assert used and used <= exported, used - exported
    labels = {label for expr in exprs for label in re.findall(r"by \(([^)]*)\)", expr)}
    assert all("job" not in {x.strip() for x in group.split(",")} for group in labels), labels
