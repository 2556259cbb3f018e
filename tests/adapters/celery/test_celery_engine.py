"""End-to-end tests of the Celery adapter: real Celery workers on real Redis, RabbitMQ and moto's SQS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery_jobs as jobs
import pytest
from kombu import Producer
from support import open_harness

from taskbridge import Envelope, get_engine
from taskbridge.testing import Harness
from taskbridge.testing import jobs as contract_jobs

# The contract settings, but as these tests were written for: a 5s visibility timeout, and the
# defaults for what they do not exercise (lock retry, inline waits, default timeout).
SETTINGS: dict[str, str | None] = {
    "TASKBRIDGE_VISIBILITY_TIMEOUT": "5",
    "TASKBRIDGE_MAX_NATIVE_DELAY": "2",
    "TASKBRIDGE_LOCK_RETRY": None,
    "TASKBRIDGE_INLINE_WAIT_MAX": None,
    "TASKBRIDGE_DEFAULT_TIMEOUT": None,
}


@pytest.fixture(params=["redis", "amqp", "sqs"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A fresh harness on each transport with Celery workers importing ``celery_jobs``; skipped
    when its server is down (failed when CI=true)."""
    with open_harness(f"celery-{request.param}", tmp_path, "celery_jobs", SETTINGS) as harness:
        yield harness


def test_depth_counts_waiting_messages_then_enqueue_and_enqueue_many_run_once(run: Harness) -> None:
    engine = get_engine()
    assert engine.depth(run.queue) == 0
    jobs.echo.enqueue(-1, payload={"text": "zürich ✓", "list": [1, None]})
    assert jobs.echo.enqueue_many(({"n": n} for n in range(45)), batch_size=20) == 45
    run.wait_for(lambda: engine.depth(run.queue) == 46, 10, "depth should count the 46 waiting messages")
    run.start_workers()
    run.wait_for(lambda: len(run.events("ran", "echo")) >= 46, 60, "not every call ran")
    time.sleep(0.5)
    ran = run.events("ran", "echo")
    assert sorted(e["n"] for e in ran) == list(range(-1, 45))
    assert next(e["payload"] for e in ran if e["n"] == -1) == {"text": "zürich ✓", "list": [1, None]}
    run.wait_for(lambda: engine.depth(run.queue) == 0, 10, "the queue should be empty")


def test_hard_timeout_kills_the_child_then_retries_and_dead_letters(run: Harness) -> None:
    run.start_workers()
    token = uuid.uuid4().hex
    jobs.stuck.enqueue(token)
    [dead] = run.wait_for(lambda: run.events("outcome:dead", "stuck"), 40, "the stuck job was not dead-lettered")
    assert dead["timed_out"] is True
    [retried] = run.events("outcome:retried", "stuck")
    assert retried["timed_out"] is True
    started = run.events("started", "stuck")
    assert len(started) == 2, "max_retries=1: two attempts, each killed"
    assert len({e["pid"] for e in started}) == 2, "each kill replaces the prefork child"
    run.wait_for(lambda: get_engine().depth(run.dead_queue) == 1, 15, "the dead-letter queue should hold it")
    jobs.echo.enqueue(7)
    run.wait_for(lambda: run.events("ran", "echo"), 30, "the worker stopped working after the kills")


def test_a_job_whose_worker_is_killed_runs_again(run: Harness) -> None:
    marker = run.workdir / f"crashy-{uuid.uuid4().hex}"
    run.start_workers()
    contract_jobs.crashy.enqueue(uuid.uuid4().hex, str(marker))
    run.wait_for(lambda: run.events("started", "crashy"), 30, "crashy never started")
    run.kill_workers()
    assert not run.events("ran", "crashy")
    run.start_workers()
    run.wait_for(lambda: run.events("ran", "crashy"), 60, "the killed job never ran again")
    time.sleep(1.0)
    assert len(run.events("ran", "crashy")) == 1


def test_a_countdown_longer_than_the_native_maximum_hops_and_runs_once(run: Harness) -> None:
    run.start_workers()
    # A worker that starts later than the countdown's first hop would only see it due: wait for it.
    run.wait_for(lambda: " ready." in run.worker_logs(), 60, "the worker did not start")
    countdown = 5.0
    assert countdown > 2.0, "TASKBRIDGE_MAX_NATIVE_DELAY=2 in these tests"
    sent = time.time()
    jobs.echo.options(countdown=countdown).enqueue(1)
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "the delayed job never ran")
    assert sent + countdown - 0.05 <= ran["time"] <= sent + countdown + 2.0, f"ran after {ran['time'] - sent:.2f}s"
    assert run.events("outcome:deferred", "echo"), "a delay over the native maximum should hop"
    time.sleep(3.0)
    assert len(run.events("ran", "echo")) == 1, "the delayed job ran more than once"


def test_messages_celery_cannot_run_reach_the_dead_letters_and_the_worker_survives(run: Harness) -> None:
    run.start_workers()
    engine = get_engine()
    engine.publish([Envelope(job="cq.no_such_job", queue=run.queue)])
    _publish_foreign(run.queue)
    run.wait_for(lambda: engine.depth(run.dead_queue) == 4, 30, "4 bad messages should be dead letters")
    reasons = {e.get("reason", "")[:40] for e in run.events("outcome:dead")}
    assert any("unknown job" in r for r in reasons), reasons
    jobs.echo.enqueue(3)
    run.wait_for(lambda: run.events("ran", "echo"), 30, "the worker stopped working after bad messages")


def _publish_foreign(queue: str) -> None:
    """Messages from other producers: undecodable JSON, no task header, and pickle (not accepted)."""
    from taskbridge_celery.app import queue as kombu_queue

    app = get_engine().app  # type: ignore[attr-defined]
    with app.connection_for_write() as connection:
        producer = Producer(connection.default_channel)
        common: dict[str, Any] = {"exchange": "", "routing_key": queue, "declare": [kombu_queue(queue)]}
        producer.publish(
            b"{not json",
            headers={"task": "cq.echo", "id": uuid.uuid4().hex},
            content_type="application/json",
            content_encoding="utf-8",
            **common,
        )
        producer.publish({"hello": "not a task"}, serializer="json", **common)
        producer.publish(
            [[1], {}, {}], serializer="pickle", headers={"task": "cq.echo", "id": uuid.uuid4().hex}, **common
        )
