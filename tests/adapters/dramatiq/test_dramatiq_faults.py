"""Broker faults under the Dramatiq engine: a TCP proxy in front of the shared Redis, RabbitMQ or moto
server is cut and restored (the servers themselves are never touched)."""

from __future__ import annotations

import collections
import contextlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dramatiq_fault_jobs as jobs
import pytest
from support import open_harness

from taskbridge import PublishError
from taskbridge.testing import Combination, Harness
from taskbridge.testing.harness import DEFAULT_SQS_ENDPOINT
from taskbridge.testing.proxy import TcpProxy

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
SQS_ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT)
SETTINGS: dict[str, str | None] = {"TASKBRIDGE_VISIBILITY_TIMEOUT": "10"}


@contextlib.contextmanager
def behind_proxy(url: str, tmp_path: Path) -> Iterator[tuple[Harness, TcpProxy]]:
    """A harness on the Dramatiq engine whose broker connections (producer and workers) all go through a proxy."""
    target = urlsplit(url if not url.startswith("sqs") else SQS_ENDPOINT)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 0)
    try:
        if url.startswith("sqs"):
            combination = Combination("dramatiq", url)
            os.environ["TASKBRIDGE_SQS_ENDPOINT_URL"] = proxy.url(SQS_ENDPOINT)
        else:
            combination = Combination("dramatiq", proxy.url(url))
        with open_harness(combination, tmp_path, "dramatiq_fault_jobs", SETTINGS) as harness:
            yield harness, proxy
    finally:
        proxy.close()
        os.environ["TASKBRIDGE_SQS_ENDPOINT_URL"] = SQS_ENDPOINT


def _runs(harness: Harness) -> collections.Counter[int]:
    return collections.Counter(event["n"] for event in harness.events("ran", "paced"))


def _drain_through_cuts(
    harness: Harness, proxy: TcpProxy, count: int, seconds: float, cuts: list[tuple[float, float]]
) -> int:
    """Enqueue ``count`` jobs of ``seconds`` each, start one worker, cut the proxy per ``cuts``
    (seconds up, seconds down) during the drain, then check that every job ran at least once;
    returns how many runs were repeats."""
    assert jobs.paced.enqueue_many({"n": n, "seconds": seconds} for n in range(count)) == count
    harness.start_workers(concurrency=8)
    harness.wait_for(lambda: len(_runs(harness)) >= 5, 40, "the drain never started")
    for up, down in cuts:
        time.sleep(up)
        proxy.cut()
        time.sleep(down)
        proxy.restore()
    assert len(_runs(harness)) < count, "the drain ended before the last cut: the test proves nothing"
    harness.wait_for(lambda: len(_runs(harness)) >= count, 120, "jobs were lost while the worker lived")
    time.sleep(1.0)
    runs = _runs(harness)
    duplicates = sum(times - 1 for times in runs.values())
    missing = sorted(set(range(count)) - set(runs))
    assert not missing, f"lost {len(missing)} of {count} jobs ({duplicates} ran twice or more): {missing[:20]}"
    print(f"{harness.combination}: {count} jobs, {len(cuts)} cuts, {duplicates} duplicate runs")
    return duplicates


def test_redis_cuts_during_a_drain_lose_no_job(tmp_path: Path) -> None:
    with behind_proxy(REDIS, tmp_path) as (harness, proxy):
        rng = random.Random(16)
        cuts = [(rng.uniform(0.2, 0.6), rng.uniform(0.5, 1.0)) for _ in range(20)]
        # 40 ms jobs on 8 threads: the drain outlasts the 20 cuts however fast the worker is.
        _drain_through_cuts(harness, proxy, 3000, 0.04, cuts)


@pytest.mark.parametrize("url", [AMQP, "sqs://"], ids=["amqp", "sqs"])
def test_a_five_second_cut_during_a_drain_loses_no_job_and_runs_none_twice(url: str, tmp_path: Path) -> None:
    with behind_proxy(url, tmp_path) as (harness, proxy):
        duplicates = _drain_through_cuts(harness, proxy, 300, 0.03, [(0.5, 5.0)])
    # The jobs that finished while the connection was down lost their acknowledgement: RabbitMQ
    # hands them out again flagged as redelivered (SQS after the visibility timeout), and the
    # runner's finished marks keep them from running again.
    assert duplicates == 0, f"{duplicates} jobs ran again"


@pytest.mark.parametrize("url", [REDIS, AMQP, "sqs://"], ids=["redis", "amqp", "sqs"])
def test_an_enqueue_the_broker_did_not_store_raises_publish_error(url: str, tmp_path: Path) -> None:
    with behind_proxy(url, tmp_path) as (harness, proxy):
        jobs.paced.enqueue(n=0)  # connected once, so the failure below is a lost broker, not a bad URL
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(PublishError) as raised:
            jobs.paced.enqueue(n=1)
        assert time.monotonic() - started < 30, "a failed enqueue should fail within a bounded time"
        assert raised.value.__cause__ is not None, "the transport's own error is chained"
        proxy.restore()
        jobs.paced.enqueue(n=2)
        assert harness.depth(harness.queue) >= 2, "the producer works again once the broker is back"


def test_ids_a_lost_fetch_reply_left_in_the_workers_acks_set_are_delivered(redis_url: str) -> None:
    from taskbridge_dramatiq import DramatiqEngine
    from taskbridge_dramatiq.brokers import build_broker
    from taskbridge_dramatiq.settings import DramatiqSettings

    from taskbridge import Envelope
    from taskbridge.config import load_settings

    config = load_settings(engine="dramatiq", broker_url=redis_url, namespace=f"tblost{uuid.uuid4().hex[:8]}")
    queue = "lost"
    producer = DramatiqEngine(config)
    worker: Any = build_broker(config, DramatiqSettings(), worker=True, middleware=[])
    try:
        producer.publish([Envelope(job=jobs.paced.name, queue=queue, kwargs={"n": n}) for n in range(3)])
        worker.do_fetch(queue, 2)  # Dramatiq's own fetch under this worker's id; its reply never arrives
        consumer = worker.consume(queue, prefetch=10, timeout=100)
        delivered = []
        deadline = time.monotonic() + 5
        while len(delivered) < 3 and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                delivered.append(message)
                consumer.ack(message)
        assert len(delivered) == 3, f"{3 - len(delivered)} of 3 messages stayed stranded in the worker's acks set"
        assert producer.depth(queue) == 0
    finally:
        producer.purge(queue)
        producer.close()
        worker.close()


def test_delayed_jobs_held_by_a_worker_through_a_redis_cut_still_run(tmp_path: Path) -> None:
    with behind_proxy(REDIS, tmp_path) as (harness, proxy):
        harness.start_workers()
        harness.wait_for(lambda: "dramatiq worker process" in harness.worker_logs(), 30, "the worker never started")
        sent = time.time()
        for n in range(10):
            jobs.paced.options(countdown=3).enqueue(n=n)
        time.sleep(1.0)  # the worker now holds them in memory until they are due
        proxy.cut()
        time.sleep(5.0)
        proxy.restore()
        harness.wait_for(lambda: len(_runs(harness)) >= 10, 60, "delayed jobs held through the cut never ran")
        assert time.time() - sent < 30, "delayed jobs came back only after the worker's heartbeat timed out"
        assert set(_runs(harness)) == set(range(10))


@pytest.mark.parametrize("url", [AMQP, "sqs://"], ids=["amqp", "sqs"])
def test_repeated_cuts_during_a_drain_lose_no_job(url: str, tmp_path: Path) -> None:
    with behind_proxy(url, tmp_path) as (harness, proxy):
        rng = random.Random(7)
        cuts = [(rng.uniform(0.5, 1.5), rng.uniform(0.5, 2.0)) for _ in range(5)]
        _drain_through_cuts(harness, proxy, 400, 0.03, cuts)
        log = harness.worker_logs()
        assert "Traceback" not in log, log[-4000:]
        faults = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
        print(f"{len(faults)} warnings and errors in the worker's log")
        flood = "\n".join(faults[:60])
        assert len(faults) <= 4 * len(cuts), f"the worker flooded its log through the cuts:\n{flood}"
