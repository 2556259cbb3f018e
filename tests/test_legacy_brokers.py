"""Zero-downtime migration end to end: plain, unmigrated Celery and Dramatiq producers publish to the
broker a taskbridge worker consumes; the job that declares the old name runs their messages, and a
pickled message lands in ``<queue>-dead`` with how to switch the producer to JSON."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import legacy_jobs
import pytest
from celery import Celery
from kombu import Exchange, Queue
from support import TESTS_DIR, open_harness

from taskbridge import get_engine
from taskbridge.config import load_settings, mask_url
from taskbridge.engine import load_engine_factory
from taskbridge.layout import amqp_queue_arguments
from taskbridge.stranded import warn_about_stranded
from taskbridge.testing import Harness

# During a migration the Celery engine shares kombu's bare Redis keys with the old Celery app.
SHARED_CELERY_KEYS = {"TASKBRIDGE_CELERY_REDIS_KEY_PREFIX": ""}


@pytest.fixture(params=["celery-redis", "celery-amqp", "celery-sqs"])
def celery_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path, "legacy_jobs", settings=SHARED_CELERY_KEYS) as harness:
        yield harness


@pytest.fixture(params=["dramatiq-redis", "dramatiq-amqp", "dramatiq-sqs"])
def dramatiq_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path, "legacy_jobs") as harness:
        yield harness


def old_celery_app(run: Harness, serializer: str = "json") -> Celery:
    """The producers' Celery app as it was before the migration, sending to the queue the worker reads."""
    if run.combination.broker_url.startswith("sqs"):
        # Plain Celery on SQS: the queue under kombu's prefix, bodies base64-encoded (kombu's default).
        broker: Any = get_engine()
        app = Celery("oldapp", broker=broker.broker.url, set_as_current=False)
        app.conf.update(
            task_default_queue=run.queue,
            task_serializer=serializer,
            accept_content=[serializer],
            broker_transport_options={
                "region": "us-east-1",
                "queue_name_prefix": f"{os.environ['TASKBRIDGE_NAMESPACE']}-",
                "is_secure": False,
            },
        )
        return app
    app = Celery("oldapp", broker=run.combination.broker_url, set_as_current=False)
    app.conf.update(task_default_queue=run.queue, task_serializer=serializer, accept_content=[serializer])
    # On RabbitMQ this old app declares its queue with the shared layout's arguments; a queue it
    # declared without them is used as it is (tests/test_adopted_queues.py).
    arguments = amqp_queue_arguments(run.queue)
    queue = Queue(run.queue, Exchange(run.queue), routing_key=run.queue, queue_arguments=arguments)
    app.conf.task_queues = [queue]
    return app


def old_dramatiq_broker(run: Harness, encoder: Any = None, *, sqs_namespace: bool = True) -> dramatiq.Broker:
    """The producers' Dramatiq broker as it was before the migration (on SQS under the namespace
    taskbridge uses, or under none when not ``sqs_namespace``)."""
    url = run.combination.broker_url
    if url.startswith("redis"):
        from dramatiq.brokers.redis import RedisBroker

        broker: dramatiq.Broker = RedisBroker(url=url, namespace=os.environ["TASKBRIDGE_NAMESPACE"])
    elif url.startswith("sqs"):
        # Plain dramatiq-sqs: its queue is "<namespace>_<queue>", not the layout's "<namespace>-<queue>".
        from dramatiq_sqs import SQSBroker

        broker = SQSBroker(
            namespace=os.environ["TASKBRIDGE_NAMESPACE"] if sqs_namespace else None,
            endpoint_url=os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL"),
            region_name="us-east-1",
        )
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from taskbridge_dramatiq.brokers import pika_url

        broker = RabbitmqBroker(url=pika_url(url))
    return broker


def test_an_old_celery_producers_delay_runs_the_job(celery_run: Harness) -> None:
    app = old_celery_app(celery_run)

    @app.task(name=legacy_jobs.CELERY_NAME)
    def send_report(user_id: int, day: str = "today") -> None: ...

    celery_run.start_workers()
    send_report.delay(42, day="monday")
    send_report.apply_async(args=(43,), countdown=1)
    ran = celery_run.wait_for(
        lambda: len(celery_run.events("ran", "send_report")) >= 2 and celery_run.events("ran", "send_report"),
        60,
        "the old producer's messages did not run",
    )
    assert sorted((e["user_id"], e["day"]) for e in ran) == [(42, "monday"), (43, "today")]
    assert get_engine().depth(celery_run.dead_queue) == 0


def test_an_old_celery_producers_pickle_message_is_dead_lettered_with_how_to_switch(celery_run: Harness) -> None:
    app = old_celery_app(celery_run, serializer="pickle")

    @app.task(name=legacy_jobs.CELERY_NAME)
    def send_report(user_id: int) -> None: ...

    celery_run.start_workers()
    send_report.delay(42)
    celery_run.wait_for(lambda: get_engine().depth(celery_run.dead_queue) == 1, 60, "no dead letter")
    # The outcome event is written just after the dead letter is stored.
    [dead] = celery_run.wait_for(lambda: celery_run.events("outcome:dead"), 10, "no outcome:dead event")
    assert "pickle" in dead["reason"] and "task_serializer='json'" in dead["reason"]
    assert celery_run.events("ran") == []


def test_an_old_dramatiq_producers_send_runs_the_job(dramatiq_run: Harness) -> None:
    broker = old_dramatiq_broker(dramatiq_run)

    @dramatiq.actor(actor_name=legacy_jobs.DRAMATIQ_NAME, queue_name=dramatiq_run.queue, broker=broker)
    def send_report(user_id: int, day: str = "today") -> None: ...

    send_report.send(7, day="friday")  # the old producers were sending before the new workers started
    dramatiq_run.start_workers()
    send_report.send_with_options(args=(8,), delay=500)
    ran = dramatiq_run.wait_for(
        lambda: len(dramatiq_run.events("ran", "send_report")) >= 2 and dramatiq_run.events("ran", "send_report"),
        60,
        "the old producer's messages did not run",
    )
    assert sorted((e["user_id"], e["day"]) for e in ran) == [(7, "friday"), (8, "today")]
    broker.close()


def test_an_old_dramatiq_producers_pickle_message_is_dead_lettered_with_how_to_switch(dramatiq_run: Harness) -> None:
    from dramatiq.encoder import JSONEncoder, PickleEncoder

    from taskbridge.testing.harness import wire_support

    if wire_support(get_engine()) is None:
        pytest.skip("needs the Dramatiq consumer's wire guard (raw items through Runner.run_item), not merged yet")
    broker = old_dramatiq_broker(dramatiq_run)

    @dramatiq.actor(actor_name=legacy_jobs.DRAMATIQ_NAME, queue_name=dramatiq_run.queue, broker=broker)
    def send_report(user_id: int) -> None: ...

    dramatiq.set_encoder(PickleEncoder())
    try:
        send_report.send(7)
    finally:
        dramatiq.set_encoder(JSONEncoder())
    dramatiq_run.start_workers()
    dramatiq_run.wait_for(lambda: get_engine().depth(dramatiq_run.dead_queue) == 1, 60, "no dead letter")
    # The outcome event is written just after the dead letter is stored.
    [dead] = dramatiq_run.wait_for(lambda: dramatiq_run.events("outcome:dead"), 10, "no outcome:dead event")
    assert "pickle" in dead["reason"] and "JSONEncoder" in dead["reason"]
    assert dramatiq_run.events("ran") == []
    broker.close()


def test_old_dramatiq_sqs_producers_without_a_namespace_run_when_the_worker_is_told(tmp_path: Path) -> None:
    # SQSBroker() without a namespace sends to the bare queue name.
    settings = {"TASKBRIDGE_DRAMATIQ_SQS_LEGACY_NAMESPACE": ""}
    with open_harness("dramatiq-sqs", tmp_path, "legacy_jobs", settings=settings) as run:
        broker = old_dramatiq_broker(run, sqs_namespace=False)

        @dramatiq.actor(actor_name=legacy_jobs.DRAMATIQ_NAME, queue_name=run.queue, broker=broker)
        def send_report(user_id: int, day: str = "today") -> None: ...

        send_report.send(9, day="sunday")
        run.start_workers()
        [ran] = run.wait_for(lambda: run.events("ran", "send_report"), 60, "the old producer's message did not run")
        assert (ran["user_id"], ran["day"]) == (9, "sunday")
        broker.close()


def _taskbridge(*args: str, columns: int = 80) -> str:
    """``taskbridge ARGS`` with this test's settings (the harness's environment); its output."""
    done = subprocess.run(
        [sys.executable, "-m", "taskbridge", *args],
        capture_output=True,
        env={**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "PYTHONPATH": str(TESTS_DIR)},
        timeout=120,
    )
    assert done.returncode == 0, f"taskbridge {' '.join(args)} failed:\n{done.stdout.decode()}{done.stderr.decode()}"
    return done.stdout.decode()


def test_status_shows_old_dramatiq_sqs_producers_queue_and_move_legacy_brings_its_backlog_over(
    tmp_path: Path,
) -> None:
    """A backlog plain dramatiq-sqs producers left in ``<namespace>_<queue>``: ``taskbridge status``
    shows its depth as a legacy row of the queue, and ``taskbridge move --legacy`` moves it into the
    queue's own SQS queue, where each job runs once."""
    count = 25
    with open_harness("dramatiq-sqs", tmp_path, "legacy_jobs") as run:
        broker = old_dramatiq_broker(run)

        @dramatiq.actor(actor_name=legacy_jobs.DRAMATIQ_NAME, queue_name=run.queue, broker=broker)
        def send_report(user_id: int) -> None: ...

        for user_id in range(count):
            send_report.send(user_id)
        broker.close()
        legacy_name = f"{os.environ['TASKBRIDGE_NAMESPACE']}_{run.queue}"

        def rows() -> list[dict[str, Any]]:
            return list(json.loads(_taskbridge("status", "--json", "--queues", run.queue))["queues"])

        main, legacy = run.wait_for(
            lambda: (found := rows()) and found[-1].get("depth") == count and found,
            60,
            "status did not show the legacy queue's backlog",
        )
        assert (main["queue"], main["legacy"], main["depth"]) == (run.queue, None, 0)
        assert (legacy["queue"], legacy["legacy"]) == (run.queue, legacy_name)
        assert f"{legacy_name} (legacy)" in _taskbridge("status", "--once", "--queues", run.queue, columns=200)

        url = run.combination.broker_url
        celery_settings = load_settings(engine="celery")
        celery = load_engine_factory("celery")(celery_settings)
        try:  # a Celery worker, which never reads that queue, says how to bring its backlog over
            [command] = warn_about_stranded(celery, celery_settings, [run.queue], ["legacy_jobs"])
        finally:
            celery.close()
        masked = shlex.quote(mask_url(url))
        assert command == (
            f"taskbridge move legacy_jobs --legacy --from-engine dramatiq --from-broker {masked} "
            f"--to-engine celery --to-broker {masked} --queues {run.queue}"
        )

        [report] = json.loads(
            _taskbridge(
                *("move", "legacy_jobs", "--json", "--legacy", "--queues", run.queue),
                *("--from-engine", "dramatiq", "--from-broker", url, "--to-engine", "dramatiq", "--to-broker", url),
            )
        )
        assert (report["moved"], report["malformed"], report["left"]) == (count, 0, 0)
        run.wait_for(lambda: get_engine().depth(run.queue) == count, 30, "the moved jobs are not in the queue")
        assert rows()[-1]["depth"] == 0, "the legacy queue still holds jobs"

        run.start_workers()
        run.wait_for(lambda: len(run.events("ran", "send_report")) >= count, 60, "the moved jobs did not run")
        time.sleep(2)
        assert sorted(e["user_id"] for e in run.events("ran", "send_report")) == list(range(count))


MOVE_TO_SQS = ("--from-broker", "sqs://", "--to-engine", "dramatiq", "--to-broker", "sqs://")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--from-engine", "dramatiq"), "name those jobs' modules"),
        (("legacy_jobs", "--from-engine", "celery"), "the celery engine reads no queue outside the layout"),
    ],
)
def test_move_legacy_says_what_it_needs(args: tuple[str, ...], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskbridge", "move", "--legacy", "--queues", "q", *args, *MOVE_TO_SQS],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
