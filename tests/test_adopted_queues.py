"""A RabbitMQ queue that plain Celery or a plain client declared first, with other arguments than
the layout's, is used as it is by both engines' workers and producers: its backlog runs, new jobs
run, dead letters still land in ``<queue>-dead``, and one warning per queue says what differs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import legacy_jobs
import pytest
from celery import Celery
from kombu import Exchange, Queue
from support import open_harness

from taskbridge.layout import amqp_queue_arguments
from taskbridge.testing import Harness, jobs

pika = pytest.importorskip("pika")

ENGINES = ("celery", "dramatiq")


def _pika_channel(harness: Harness) -> Any:
    url = harness.combination.broker_url.rstrip("/") + "/%2F"
    return pika.BlockingConnection(pika.URLParameters(url)).channel()


def _by_plain_celery(harness: Harness) -> Celery:
    """An unmodified Celery app whose first send declares the queue as Celery does: durable, no arguments."""
    app = Celery("oldapp", broker=harness.combination.broker_url, set_as_current=False)
    app.conf.update(task_default_queue=harness.queue, task_serializer="json", accept_content=["json"])
    return app


def _by_pika(arguments: dict[str, Any] | None, durable: bool) -> Callable[[Harness], Celery]:
    """A plain pika client declares the queue; an old Celery app then sends to it without declaring."""

    def declare(harness: Harness) -> Celery:
        channel = _pika_channel(harness)
        channel.queue_declare(harness.queue, durable=durable, arguments=arguments)
        channel.connection.close()
        app = _by_plain_celery(harness)
        app.conf.task_queues = [Queue(harness.queue, Exchange(""), routing_key=harness.queue, no_declare=True)]
        return app

    return declare


DECLARED_BY = {
    "plain-celery": _by_plain_celery,
    "pika-max-priority": _by_pika({"x-max-priority": 10}, durable=True),
    "pika-no-arguments-not-durable": _by_pika(None, durable=False),
    "pika-message-ttl": _by_pika({"x-message-ttl": 600_000}, durable=True),
    "pika-max-length": _by_pika({"x-max-length": 10_000}, durable=True),
    "pika-lazy": _by_pika({"x-queue-mode": "lazy"}, durable=True),
    "pika-quorum": _by_pika({"x-queue-type": "quorum"}, durable=True),
}


@contextlib.contextmanager
def _run(engine: str, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(f"{engine}-amqp", tmp_path, "adoption_jobs") as harness:
        try:
            yield harness
        finally:
            harness.stop_workers()
            with contextlib.suppress(Exception):
                channel = _pika_channel(harness)
                for name in (harness.queue, harness.dead_queue):
                    for suffix in ("", ".DQ", ".XQ"):
                        channel.queue_delete(name + suffix)
                channel.connection.close()


def _layout_refused(queue: str, harness: Harness) -> bool:
    """Whether RabbitMQ refuses to declare ``queue`` with the layout's arguments (PRECONDITION_FAILED)."""
    channel = _pika_channel(harness)
    try:
        channel.queue_declare(queue, durable=True, arguments=amqp_queue_arguments(queue))
    except pika.exceptions.ChannelClosedByBroker as exc:
        return bool(exc.reply_code == 406)
    finally:
        with contextlib.suppress(Exception):
            channel.connection.close()
    return False


def _adoption_warning(queue: str) -> str:
    return f"queue {queue!r} already exists on RabbitMQ with other arguments than taskbridge's layout"


def _send_legacy(app: Celery) -> None:
    @app.task(name=legacy_jobs.CELERY_NAME)
    def send_report(user_id: int, day: str = "today") -> None: ...

    send_report.delay(42, day="monday")
    send_report.apply_async(args=(43,), countdown=1)


@pytest.mark.parametrize("declared_by", list(DECLARED_BY))
@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_and_producers_use_a_queue_declared_first_with_other_arguments(
    engine: str, declared_by: str, tmp_path: Path
) -> None:
    with _run(engine, tmp_path) as harness:
        _send_legacy(DECLARED_BY[declared_by](harness))
        assert _layout_refused(harness.queue, harness), "the queue was not declared with other arguments"

        harness.start_workers()
        assert jobs.echo.enqueue("from job.enqueue") is not None
        enqueued = subprocess.run(
            [sys.executable, "-m", "taskbridge", "enqueue", jobs.echo.name, '["from the command"]'],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert enqueued.returncode == 0, enqueued.stderr
        assert _adoption_warning(harness.queue) in enqueued.stderr
        jobs.flaky.enqueue("retried, then dead")

        ran = harness.wait_for(
            lambda: len(harness.events("ran", "send_report")) >= 2 and harness.events("ran", "send_report"),
            90,
            "the old producer's messages did not run",
        )
        assert sorted((e["user_id"], e["day"]) for e in ran) == [(42, "monday"), (43, "today")]
        echoed = harness.wait_for(
            lambda: len(harness.events("ran", "echo")) >= 2 and harness.events("ran", "echo"),
            60,
            "new jobs did not run",
        )
        assert sorted(e["args"][0] for e in echoed) == ["from job.enqueue", "from the command"]
        harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 90, "the failing job never reached -dead")
        assert len(harness.events("attempt", "flaky")) == 4, "the failing job did not run its 4 attempts"

        log = harness.worker_logs()
        assert log.count(_adoption_warning(harness.queue)) == 1, log[-4000:]
        assert "PreconditionFailed" not in log and "Unrecoverable error" not in log, log[-4000:]
        assert harness.depth(harness.queue) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_dead_letter_queue_declared_with_other_arguments_takes_the_dead_letters(engine: str, tmp_path: Path) -> None:
    with _run(engine, tmp_path) as harness:
        channel = _pika_channel(harness)
        channel.queue_declare(harness.dead_queue, durable=True, arguments={"x-max-length": 5})
        channel.connection.close()
        harness.start_workers()
        jobs.flaky.enqueue("dead letter")
        harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 90, "the dead letter never landed")
        assert len(harness.events("attempt", "flaky")) == 4
        log = harness.worker_logs()
        assert log.count(_adoption_warning(harness.dead_queue)) == 1, log[-4000:]
        assert _layout_refused(harness.dead_queue, harness), "the dead-letter queue was redeclared"
