"""Both engines on one broker: they start cleanly in any order, share what the layout shares, warn
about what they cannot see, and never loop on an outcome they cannot store (docs/transports.md)."""

from __future__ import annotations

import contextlib
import re
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import unavailable

from taskbridge import Envelope, set_engine
from taskbridge.config import get_settings, load_settings, mask_url
from taskbridge.engine import Engine, load_engine_factory
from taskbridge.layout import amqp_queue_arguments
from taskbridge.stranded import warn_about_stranded
from taskbridge.testing import KNOWN, Harness, jobs, unavailable_reason

ENGINES = ("celery", "dramatiq")
AMQP_URL = KNOWN["celery-amqp"].broker_url
DECLARATION_TROUBLE = re.compile(r"PRECONDITION_FAILED|inequivalent arg|PreconditionFailed|Unrecoverable error")


def _other(engine: str) -> str:
    return ENGINES[1 - ENGINES.index(engine)]


@contextlib.contextmanager
def _harness(engine: str, transport: str, workdir: Path) -> Iterator[Harness]:
    combination = KNOWN[f"{engine}-{transport}"]
    reason = unavailable_reason(combination) or unavailable_reason(KNOWN[f"{_other(engine)}-{transport}"])
    if reason:
        unavailable(reason)
    harness = Harness(combination, workdir)
    try:
        yield harness
    finally:
        harness.close()


@contextlib.contextmanager
def _producer(engine: str) -> Iterator[Engine]:
    """``engine`` as this process's engine (same broker, namespace and queue as the harness)."""
    other = load_engine_factory(engine)(load_settings(engine=engine))
    set_engine(other)
    try:
        yield other
    finally:
        set_engine(None)


def _start(harness: Harness, engine: str) -> int:
    """Start a worker of ``engine``; returns the number of its log."""
    harness.start_workers(env={"TASKBRIDGE_ENGINE": engine})
    return len(list(harness.workdir.glob("worker-*.log"))) - 1


def _alive(harness: Harness) -> None:
    for worker in harness.workers:
        assert worker.poll() is None, f"a worker exited with code {worker.returncode}\n{harness.diagnostics()}"


def _log(harness: Harness, index: int) -> str:
    return (harness.workdir / f"worker-{index}.log").read_text(errors="replace")


def _wait_consuming(harness: Harness, index: int, engine: str) -> None:
    """Wait until the worker consumes (a job its own engine enqueued ran in that worker's process)."""
    token = f"{engine}-{index}"
    with _producer(engine):
        jobs.echo.enqueue(token)
    harness.wait_for(
        lambda: [e for e in harness.events("ran", "echo") if e["args"] == [token]], 60, f"{engine} worker idle"
    )


@pytest.mark.parametrize("first", ENGINES)
@pytest.mark.parametrize("transport", ["redis", "amqp", "sqs"])
def test_both_engines_start_cleanly_on_one_broker_in_either_order(first: str, transport: str, tmp_path: Path) -> None:
    second = _other(first)
    with _harness(first, transport, tmp_path) as harness:
        for round_ in range(2):
            started = []
            for engine in (first, second):
                index = _start(harness, engine)
                started.append(index)
                if transport == "redis":  # on a shared queue the other worker may take (and reject) it
                    _wait_consuming(harness, index, engine)
            time.sleep(3.0)
            _alive(harness)
            for index in started:
                log = _log(harness, index)
                assert not DECLARATION_TROUBLE.search(log), f"round {round_ + 1}, worker {index}:\n{log[-3000:]}"
            for engine in ENGINES:
                with _producer(engine):
                    assert jobs.echo.enqueue(f"from {engine}") is not None
                    assert jobs.echo.enqueue_many([(engine, n) for n in range(3)]) == 3
            harness.stop_workers()


@pytest.mark.parametrize("producer", ["celery", "dramatiq"])
@pytest.mark.parametrize("transport", ["amqp", "sqs"])
def test_a_job_enqueued_under_one_engine_runs_on_the_others_worker(
    producer: str, transport: str, tmp_path: Path
) -> None:
    with _harness(_other(producer), transport, tmp_path) as harness:
        harness.start_workers()
        with _producer(producer):
            sent = jobs.echo.enqueue("crossed over")
        assert sent is not None
        [ran] = harness.wait_for(lambda: harness.events("ran", "echo"), 30, "the other engine's job never ran")
        assert ran["args"] == ["crossed over"]


@pytest.mark.parametrize("backlog", ENGINES)
def test_a_worker_on_redis_warns_about_the_other_engines_backlog_with_the_move_command(
    backlog: str, tmp_path: Path
) -> None:
    worker = _other(backlog)
    with _harness(worker, "redis", tmp_path) as harness:
        with _producer(backlog):
            jobs.echo.enqueue_many([(n,) for n in range(3)])
        harness.start_workers()
        url = get_settings().broker_url
        command = (
            f"taskbridge move --from-engine {backlog} --from-broker {url} --to-engine {worker} "
            f"--to-broker {url} --queues {harness.queue}"
        )
        harness.wait_for(lambda: command in _log(harness, 0), 30, f"no warning with {command!r}")
        assert _log(harness, 0).count("Move them with") == 1
        assert not harness.events("ran", "echo"), "the other engine's backlog is not this worker's to run"


@pytest.mark.parametrize("transport", ["amqp", "sqs"])
def test_the_shared_main_queue_is_not_reported_as_stranded(transport: str, tmp_path: Path) -> None:
    with _harness("celery", transport, tmp_path) as harness:
        jobs.echo.enqueue("waiting")
        dramatiq = load_engine_factory("dramatiq")(load_settings(engine="dramatiq"))
        try:
            assert warn_about_stranded(dramatiq, get_settings(), [harness.queue]) == []
        finally:
            dramatiq.close()
        assert harness.depth(harness.queue) == 1


def test_a_celery_worker_on_rabbitmq_warns_about_dramatiq_delayed_messages(tmp_path: Path) -> None:
    with _harness("celery", "amqp", tmp_path) as harness:
        with _producer("dramatiq") as dramatiq:
            dramatiq.publish([Envelope(job=jobs.echo.name, queue=harness.queue)], delay=600)
        [command] = warn_about_stranded(harness.engine, get_settings(), [harness.queue])
        masked = shlex.quote(mask_url(AMQP_URL))  # 'amqp://guest:***@...': the password never in a log
        assert command == (
            f"taskbridge move --from-engine dramatiq --from-broker {masked} --to-engine celery "
            f"--to-broker {masked} --queues {harness.queue}"
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_dead_letter_queue_locked_by_another_client_holds_the_message_without_rerunning_the_job(
    engine: str, tmp_path: Path
) -> None:
    """A write RabbitMQ refuses until someone else acts (the dead-letter queue is another
    connection's exclusive queue: RESOURCE_LOCKED) is held, not re-run. A queue that merely has
    other arguments is used as it is instead (tests/test_adopted_queues.py)."""
    pika = pytest.importorskip("pika")
    with _harness(engine, "amqp", tmp_path) as harness:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL.rstrip("/") + "/%2F"))
        channel = connection.channel()
        channel.queue_declare(harness.dead_queue, exclusive=True)
        try:
            harness.start_workers()
            jobs.fatal.enqueue("conflict")
            clear_error = f"cannot write to queue {harness.dead_queue!r}"
            harness.wait_for(lambda: clear_error in _log(harness, 0), 60, "no clear error naming the queue")
            time.sleep(8.0)  # several back-off rounds
            _alive(harness)
            log = _log(harness, 0)
            assert log.count(clear_error) == 1, log[-3000:]
            assert re.search(r"RESOURCE_LOCKED|exclusive", log), log[-3000:]
            assert len(harness.events("attempt", "fatal")) == 1, "the job body ran again"
            connection.close()  # the exclusive queue goes with its connection
            harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 60, "the held dead letter never landed")
            assert len(harness.events("attempt", "fatal")) == 1
        finally:
            with contextlib.suppress(Exception):
                connection.close()


def test_both_engines_declare_a_rabbitmq_queue_with_the_layouts_arguments(tmp_path: Path) -> None:
    """A queue declared by one engine is redeclared by the other without a conflict, and carries the
    layout's dead-letter arguments (checked by a plain client declaring it with those arguments)."""
    pika = pytest.importorskip("pika")
    with _harness("celery", "amqp", tmp_path) as harness:
        for engine in ENGINES:
            with _producer(engine):
                jobs.echo.enqueue(engine)
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL.rstrip("/") + "/%2F"))
        try:
            declared = connection.channel().queue_declare(
                harness.queue, durable=True, arguments=amqp_queue_arguments(harness.queue)
            )
            assert declared.method.message_count == 2
        finally:
            connection.close()


def test_celery_keeps_its_redis_keys_under_the_namespace_and_restores_what_a_worker_held(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    with _harness("celery", "redis", tmp_path) as harness:
        namespace = get_settings().namespace
        prefix = f"{namespace}:celery:"
        client = redis.Redis.from_url(KNOWN["celery-redis"].broker_url)
        harness.start_workers()
        token = uuid.uuid4().hex
        sent = jobs.crashy.enqueue(token, str(tmp_path / f"crashy-{token}"))
        assert sent is not None
        harness.wait_for(lambda: harness.events("started", "crashy"), 60, "the job never started")
        held = client.hvals(f"{prefix}unacked")
        assert [value for value in held if sent.id.encode() in value], "the held message is not under the namespace"
        assert client.zcard(f"{prefix}unacked_index") == 1
        outside = [key for key in client.keys(f"{namespace}:*") if not key.decode().startswith(prefix)]
        assert outside == [], "a Celery key outside <namespace>:celery:"
        harness.kill_workers()
        harness.start_workers()
        [ran] = harness.wait_for(lambda: harness.events("ran", "crashy"), 90, "the held job never came back")
        assert ran["token"] == token


@pytest.mark.parametrize("transport", ["amqp", "sqs"])
def test_celery_and_dramatiq_workers_on_one_queue_run_each_job_of_either_engines_producer_once(
    transport: str, tmp_path: Path
) -> None:
    with _harness("celery", transport, tmp_path) as harness:
        for engine in ENGINES:
            _start(harness, engine)
        sent: list[str] = []
        for round_ in range(3):  # the producers take turns while both workers consume
            for engine in ENGINES:
                with _producer(engine):
                    tokens = [f"{engine}-{round_}-{n}" for n in range(5)]
                    assert jobs.echo.enqueue_many([(token,) for token in tokens]) == len(tokens)
                    assert jobs.echo.enqueue(f"{engine}-{round_}-single") is not None
                sent += [*tokens, f"{engine}-{round_}-single"]

        def ran() -> list[str]:
            return sorted(e["args"][0] for e in harness.events("ran", "echo"))

        harness.wait_for(lambda: len(ran()) >= len(sent), 120, "not every job ran")
        harness.wait_for(lambda: harness.depth(harness.queue) == 0, 60, "the queue did not drain")
        _alive(harness)
        assert ran() == sorted(sent), "a job ran twice or another job ran"
        assert harness.depth(harness.dead_queue) == 0
