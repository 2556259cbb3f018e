"""End-to-end tests of the Celery adapter: real Celery workers on real Redis, RabbitMQ and moto's SQS."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import unavailable
from kombu import Producer

import taskbridge
from taskbridge import Envelope, get_engine
from taskbridge.publishing import dead_letter_queue

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import celery_jobs as jobs  # noqa: E402

SQS_ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
    "sqs": "sqs://",
}


def _unreachable(url: str) -> str | None:
    parts = urlsplit(SQS_ENDPOINT if url.startswith("sqs") else url)
    port = parts.port or {"redis": 6379, "amqp": 5672, "http": 80, "https": 443}.get(parts.scheme, 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} is unreachable ({exc})"


class Run:
    """One test: fresh queue names and settings, its Celery worker processes, what its jobs recorded."""

    def __init__(self, broker: str, workdir: Path) -> None:
        tag = uuid.uuid4().hex[:10]
        self.broker = broker
        self.queue = f"cq{tag}"
        self.workdir = workdir
        self.record = workdir / "record.jsonl"
        self.record.touch()
        self.env = {
            "TASKBRIDGE_ENGINE": "celery",
            "TASKBRIDGE_BROKER_URL": BROKERS[broker],
            "TASKBRIDGE_COORDINATION_URL": "redis://127.0.0.1:6379/1",
            "TASKBRIDGE_NAMESPACE": f"cqt{tag}",
            "TASKBRIDGE_DEFAULT_QUEUE": self.queue,
            "TASKBRIDGE_VISIBILITY_TIMEOUT": "5",
            "TASKBRIDGE_MAX_NATIVE_DELAY": "2",
            "TASKBRIDGE_SQS_ENDPOINT_URL": SQS_ENDPOINT,
            jobs.RECORD_ENV: str(self.record),
        }
        self._saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        taskbridge.configure()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    @property
    def dead_queue(self) -> str:
        return dead_letter_queue(self.queue)

    def start_worker(self, concurrency: int = 2) -> None:
        log = self.workdir / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        command = [sys.executable, "-m", "taskbridge", "worker", "celery_jobs", "--queues", self.queue]
        with open(log, "wb") as out:
            self.workers.append(
                subprocess.Popen(
                    [*command, "--concurrency", str(concurrency)],
                    env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def kill_workers(self) -> None:
        """SIGKILL each worker's whole process group (the main process and its prefork children)."""
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        self.workers = []

    def stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        self.workers = []

    def events(self, kind: str, job: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return [e for e in found if e["event"] == kind and (job is None or e.get("job") == job)]

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            for worker in self.workers:
                assert worker.poll() is None, f"a worker exited with {worker.returncode}\n{self.logs_text()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.broker}: {what} (after {timeout:g}s)\n{self.logs_text()}")
            time.sleep(0.1)

    def logs_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs)

    def close(self) -> None:
        try:
            self.stop_workers()
            for queue in (self.queue, self.dead_queue):
                with contextlib.suppress(Exception):
                    get_engine().purge(queue)
        finally:
            for key, value in self._saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            taskbridge.configure()


@pytest.fixture(params=list(BROKERS))
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Run]:
    """A fresh Run on each transport; skipped when its server is down (failed when CI=true)."""
    reason = _unreachable(BROKERS[request.param])
    if reason:
        unavailable(f"celery-{request.param}: {reason}")
    current = Run(str(request.param), tmp_path)
    try:
        yield current
    finally:
        current.close()


def test_depth_counts_waiting_messages_then_enqueue_and_enqueue_many_run_once(run: Run) -> None:
    engine = get_engine()
    assert engine.depth(run.queue) == 0
    jobs.echo.enqueue(-1, payload={"text": "zürich ✓", "list": [1, None]})
    assert jobs.echo.enqueue_many(({"n": n} for n in range(45)), batch_size=20) == 45
    run.wait_for(lambda: engine.depth(run.queue) == 46, 10, "depth should count the 46 waiting messages")
    run.start_worker()
    run.wait_for(lambda: len(run.events("ran", "echo")) >= 46, 60, "not every call ran")
    time.sleep(0.5)
    ran = run.events("ran", "echo")
    assert sorted(e["n"] for e in ran) == list(range(-1, 45))
    assert next(e["payload"] for e in ran if e["n"] == -1) == {"text": "zürich ✓", "list": [1, None]}
    run.wait_for(lambda: engine.depth(run.queue) == 0, 10, "the queue should be empty")


def test_hard_timeout_kills_the_child_then_retries_and_dead_letters(run: Run) -> None:
    run.start_worker()
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


def test_a_job_whose_worker_is_killed_runs_again(run: Run) -> None:
    marker = run.workdir / f"crashy-{uuid.uuid4().hex}"
    run.start_worker()
    jobs.crashy.enqueue(str(marker))
    run.wait_for(lambda: run.events("started", "crashy"), 30, "crashy never started")
    run.kill_workers()
    assert not run.events("ran", "crashy")
    run.start_worker()
    run.wait_for(lambda: run.events("ran", "crashy"), 60, "the killed job never ran again")
    time.sleep(1.0)
    assert len(run.events("ran", "crashy")) == 1


def test_a_countdown_longer_than_the_native_maximum_hops_and_runs_once(run: Run) -> None:
    run.start_worker()
    countdown = 5.0
    assert countdown > 2.0, "TASKBRIDGE_MAX_NATIVE_DELAY=2 in these tests"
    sent = time.time()
    jobs.echo.options(countdown=countdown).enqueue(1)
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "the delayed job never ran")
    assert sent + countdown - 0.05 <= ran["time"] <= sent + countdown + 2.0, f"ran after {ran['time'] - sent:.2f}s"
    assert run.events("outcome:deferred", "echo"), "a delay over the native maximum should hop"
    time.sleep(3.0)
    assert len(run.events("ran", "echo")) == 1, "the delayed job ran more than once"


def test_messages_celery_cannot_run_reach_the_dead_letters_and_the_worker_survives(run: Run) -> None:
    run.start_worker()
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
            b"{not json", headers={"task": "cq.echo", "id": uuid.uuid4().hex},
            content_type="application/json", content_encoding="utf-8", **common,
        )
        producer.publish({"hello": "not a task"}, serializer="json", **common)
        producer.publish(
            [[1], {}, {}], serializer="pickle", headers={"task": "cq.echo", "id": uuid.uuid4().hex}, **common
        )
