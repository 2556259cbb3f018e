"""The broker goes away under a running worker (a TCP proxy in front of the shared Redis, RabbitMQ
or moto server is cut, then restored): the worker logs the outage once, reminds at most every
``TASKBRIDGE_OUTAGE_REMINDER`` seconds, writes no traceback, and takes jobs again by itself. A
worker started while its broker refuses connections waits for it and then works."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from taskbridge.testing import jobs
from taskbridge.testing.harness import DEFAULT_SQS_ENDPOINT, KNOWN, Combination, Harness, unavailable_reason
from taskbridge.testing.proxy import TcpProxy

CUT = 8.0
REMINDER = 3.0


ALL = ["celery-redis", "celery-amqp", "celery-sqs", "dramatiq-redis", "dramatiq-amqp", "dramatiq-sqs"]


@contextlib.contextmanager
def proxied(name: str, tmp_path: Path, settings: dict[str, str]) -> Iterator[tuple[Harness, TcpProxy]]:
    """A harness on the known combination ``name`` whose broker (on SQS: moto's endpoint) is reached
    through a proxy the test can cut; skipped when the broker is unreachable."""
    known = KNOWN[name]
    settings = dict(settings)
    if known.broker_url.startswith("sqs"):
        endpoint = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT)
        target = urlsplit(endpoint)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 443)
        settings["TASKBRIDGE_SQS_ENDPOINT_URL"] = proxy.url(endpoint)
        combination = Combination(known.engine, known.broker_url)
    else:
        target = urlsplit(known.broker_url)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 0)
        combination = Combination(known.engine, proxy.url(known.broker_url))
    try:
        reason = unavailable_reason(known)
        if reason:
            pytest.skip(reason)
        harness = Harness(combination, tmp_path, settings=settings)
        try:
            yield harness, proxy
        finally:
            proxy.restore()
            harness.close()
    finally:
        proxy.close()


@pytest.mark.processes
@pytest.mark.parametrize("name", ALL)
def test_a_broker_outage_is_logged_once_with_bounded_reminders_and_the_worker_recovers(
    name: str, tmp_path: Path
) -> None:
    with proxied(name, tmp_path, {"TASKBRIDGE_OUTAGE_REMINDER": f"{REMINDER:g}s"}) as (harness, proxy):
        harness.start_workers()
        jobs.echo.enqueue(0)
        harness.wait_for(lambda: harness.events("ran", "echo"), 60, "the worker never ran a job")

        proxy.cut()
        cut_at = time.monotonic()
        harness.wait_for(lambda: _lines(harness, "is unreachable"), 30, "the outage was not logged")
        time.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
        proxy.restore()
        down_for = time.monotonic() - cut_at

        for n in range(1, 6):
            jobs.echo.enqueue(n)
        harness.wait_for(
            lambda: {e["args"][0] for e in harness.events("ran", "echo")} >= set(range(6)),
            90,
            "jobs enqueued after the broker came back did not run",
        )
        harness.wait_for(lambda: _lines(harness, "is reachable again"), 30, "the recovery was not logged")

        log = harness.worker_logs()
        assert len(_lines(harness, "is unreachable")) == 1, log[-4000:]
        reminders = _lines(harness, "still unreachable")
        assert len(reminders) <= down_for / REMINDER + 1, "\n".join(reminders)
        assert "Traceback" not in log, log[-4000:]
        lines = log.splitlines()
        first = next(i for i, line in enumerate(lines) if "is unreachable" in line)
        back = next(i for i, line in enumerate(lines) if "is reachable again" in line)
        during = lines[first : back + 1]
        # The outage, its reminders and recovery, plus a few one-off lines (a restored prefetch...).
        flood = "\n".join(during[:40])
        assert len(during) <= len(reminders) + 8, f"the worker flooded its log while the broker was down:\n{flood}"


@pytest.mark.processes
@pytest.mark.parametrize("name", ALL)
def test_a_worker_started_while_the_broker_refuses_connections_works_once_it_is_up(name: str, tmp_path: Path) -> None:
    with proxied(name, tmp_path, {"TASKBRIDGE_OUTAGE_REMINDER": f"{REMINDER:g}s"}) as (harness, proxy):
        jobs.echo.enqueue(0)  # the queue exists before the outage, as in a deploy that restarts workers
        proxy.cut()
        harness.start_workers()
        harness.wait_for(lambda: _lines(harness, "unreachable"), 60, "the worker did not say its broker is unreachable")
        time.sleep(CUT)
        assert harness.workers[0].poll() is None, f"the worker gave up:\n{harness.worker_logs(4000)}"
        proxy.restore()
        for n in range(1, 6):
            jobs.echo.enqueue(n)
        harness.wait_for(
            lambda: {e["args"][0] for e in harness.events("ran", "echo")} >= set(range(6)),
            90,
            "the worker never took jobs once its broker was up",
        )
        log = harness.worker_logs()
        assert "Traceback" not in log, log[-4000:]
        assert len(log.splitlines()) < 60, f"the worker flooded its log while the broker was down:\n{log[-4000:]}"


def _lines(harness: Harness, text: str) -> list[str]:
    return [line for line in harness.worker_logs().splitlines() if "taskbridge.broker" in line and text in line]
