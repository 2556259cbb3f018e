"""The broker goes away under a running worker (a TCP proxy in front of the shared Redis or RabbitMQ
is cut, then restored): the worker logs the outage once, reminds at most every
``TASKBRIDGE_OUTAGE_REMINDER`` seconds, writes no traceback, and takes jobs again by itself."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from taskbridge.testing import jobs
from taskbridge.testing.harness import KNOWN, Combination, Harness, unavailable_reason
from taskbridge.testing.proxy import TcpProxy

CUT = 8.0
REMINDER = 3.0


@pytest.mark.processes
@pytest.mark.parametrize("name", ["celery-redis", "celery-amqp", "dramatiq-redis", "dramatiq-amqp"])
def test_a_broker_outage_is_logged_once_with_bounded_reminders_and_the_worker_recovers(
    name: str, tmp_path: Path
) -> None:
    known = KNOWN[name]
    target = urlsplit(known.broker_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 0)
    combination = Combination(known.engine, proxy.url(known.broker_url))
    reason = unavailable_reason(combination)
    if reason:
        proxy.close()
        pytest.skip(reason)
    harness = Harness(combination, tmp_path, settings={"TASKBRIDGE_OUTAGE_REMINDER": f"{REMINDER:g}s"})
    try:
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
    finally:
        harness.close()
        proxy.close()


def _lines(harness: Harness, text: str) -> list[str]:
    return [line for line in harness.worker_logs().splitlines() if "taskbridge.broker" in line and text in line]
