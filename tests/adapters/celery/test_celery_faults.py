"""Broker faults under the Celery engine: a TCP proxy in front of the real Redis, RabbitMQ or moto
server is cut and restored (the servers themselves are never touched)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import celery_jobs as jobs
import pytest
from support import TESTS_DIR, unavailable

from taskbridge import PublishError, get_engine
from taskbridge.testing import KNOWN, Harness, unavailable_reason
from taskbridge.testing.harness import DEFAULT_SQS_ENDPOINT, Combination
from taskbridge.testing.proxy import TcpProxy

SETTINGS: dict[str, str | None] = {"TASKBRIDGE_VISIBILITY_TIMEOUT": "10"}
PUBLISH_BOUND = 30.0
"""Seconds within which a publish to an unreachable broker must have raised."""


@pytest.fixture
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Harness, TcpProxy]]:
    """A harness whose broker (and only it) is reached through a proxy the test can cut."""
    combination = KNOWN[f"celery-{request.param}"]
    reason = unavailable_reason(combination)
    if reason:
        unavailable(f"{combination}: {reason}")
    settings = dict(SETTINGS)
    if request.param == "sqs":
        endpoint = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT)
        target = urlsplit(endpoint)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 443)
        settings["TASKBRIDGE_SQS_ENDPOINT_URL"] = proxy.url(endpoint)
        url = combination.broker_url
    else:
        target = urlsplit(combination.broker_url)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 0)
        url = proxy.url(combination.broker_url)
    pythonpath = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    harness = Harness(
        Combination("celery", url),
        tmp_path,
        settings=settings,
        jobs_module="celery_jobs",
        worker_env={"PYTHONPATH": pythonpath},
    )
    try:
        yield harness, proxy
    finally:
        proxy.restore()
        harness.close()
        proxy.close()


@pytest.mark.parametrize("proxied", ["redis", "amqp", "sqs"], indirect=True)
def test_a_publish_while_the_broker_is_unreachable_raises_publish_error_then_works_again(
    proxied: tuple[Harness, TcpProxy],
) -> None:
    run, proxy = proxied
    jobs.echo.enqueue(1)
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(PublishError) as raised:
        jobs.echo.enqueue(2)
    took = time.monotonic() - started
    assert took < PUBLISH_BOUND, f"the failed publish took {took:.1f}s"
    assert raised.value.__cause__ is not None, "the transport's exception is chained"
    with pytest.raises(PublishError):
        jobs.echo.enqueue_many({"n": n} for n in range(20))
    proxy.restore()
    jobs.echo.enqueue(3)
    assert jobs.echo.enqueue_many({"n": n} for n in range(20)) == 20
    run.wait_for(lambda: get_engine().depth(run.queue) == 22, 15, "the publishes around the cut are stored")


@pytest.mark.parametrize("proxied", ["redis", "amqp", "sqs"], indirect=True)
def test_a_drain_survives_a_cut_connection_without_losing_a_job(
    proxied: tuple[Harness, TcpProxy], record_property: Callable[[str, object], None]
) -> None:
    run, proxy = proxied
    count = 300
    jobs.step.enqueue_many({"n": n, "pause": 0.02} for n in range(count))
    run.start_workers(concurrency=2)

    def ran() -> Counter[int]:
        return Counter(e["n"] for e in run.events("ran", "step"))

    run.wait_for(lambda: len(ran()) >= 40, 60, "the drain never started")
    proxy.cut()
    time.sleep(3.0)
    cut_at = len(ran())
    proxy.restore()
    run.wait_for(lambda: len(ran()) == count, 120, f"jobs lost after the cut: {sorted(set(range(count)) - set(ran()))}")
    time.sleep(2.0)
    counts = ran()
    twice = {n: c for n, c in counts.items() if c > 1}
    record_property("ran_again", len(twice))
    print(f"{run.combination}: {cut_at} of {count} ran before the restore; {len(twice)} ran again: {twice}")
    assert sorted(counts) == list(range(count))
    assert len(twice) <= 10, f"{len(twice)} jobs ran more than once after a 3s cut: {twice}"
    assert run.depth(run.queue) == 0
