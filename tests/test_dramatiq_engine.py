"""End-to-end tests of the Dramatiq adapter: real worker processes on real Redis, RabbitMQ and moto's SQS."""

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

import taskbridge
from taskbridge import get_engine
from taskbridge.publishing import dead_letter_queue

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import dramatiq_jobs as jobs  # noqa: E402

SQS_ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
    "sqs": "sqs://",
}


def _reachable(url: str) -> str | None:
    parts = urlsplit(SQS_ENDPOINT if url.startswith("sqs") else url)
    port = parts.port or {"redis": 6379, "amqp": 5672, "http": 80}.get(parts.scheme, 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} is unreachable ({exc})"


class Run:
    """One test's fresh queue and settings, the worker processes it starts, and what its jobs recorded."""

    def __init__(self, broker: str, workdir: Path, **settings: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.broker = broker
        self.workdir = workdir
        self.queue = f"dq{tag}"
        self.record = workdir / "record.jsonl"
        self.record.touch()
        self.env = {
            "TASKBRIDGE_ENGINE": "dramatiq",
            "TASKBRIDGE_BROKER_URL": BROKERS[broker],
            "TASKBRIDGE_COORDINATION_URL": "redis://127.0.0.1:6379/1",
            "TASKBRIDGE_NAMESPACE": f"dqt{tag}",
            "TASKBRIDGE_DEFAULT_QUEUE": self.queue,
            "TASKBRIDGE_VISIBILITY_TIMEOUT": "5",
            "TASKBRIDGE_SQS_ENDPOINT_URL": SQS_ENDPOINT,
            "TASKBRIDGE_DRAMATIQ_HARD_TIMEOUT_GRACE": "1",
            "TASKBRIDGE_DRAMATIQ_RESPAWN_DELAY": "0.2",
            jobs.RECORD_ENV: str(self.record),
            **settings,
        }
        self._saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        taskbridge.configure()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start_worker(self, concurrency: int = 2) -> None:
        log = self.workdir / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "taskbridge",
                        "worker",
                        "dramatiq_jobs",
                        "--queues",
                        self.queue,
                        "--concurrency",
                        str(concurrency),
                    ],
                    env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def kill_workers(self) -> None:
        for worker in self.workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        self.workers = []

    def stop_workers(self) -> None:
        for worker in self.workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
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
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in self.logs)

    def close(self) -> None:
        try:
            self.stop_workers()
            for queue in (self.queue, dead_letter_queue(self.queue)):
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
def broker(request: pytest.FixtureRequest) -> str:
    reason = _reachable(BROKERS[request.param])
    if reason:
        unavailable(f"{request.param}: {reason}")
    return str(request.param)


@pytest.fixture
def make_run(broker: str, tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """Builds the test's Run with extra settings (TASKBRIDGE_*=value); closes it afterwards."""
    made: list[Run] = []

    def make(**settings: str) -> Run:
        made.append(Run(broker, tmp_path, **settings))
        return made[-1]

    yield make
    for current in made:
        current.close()


@pytest.fixture
def run(make_run: Callable[..., Run]) -> Run:
    return make_run()


def test_enqueue_runs_the_job_with_its_arguments(run: Run) -> None:
    run.start_worker()
    jobs.echo.enqueue(1, payload={"text": "zürich ✓", "list": [1, None]})
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "echo never ran")
    assert (ran["n"], ran["payload"]) == (1, {"text": "zürich ✓", "list": [1, None]})


def test_enqueue_many_runs_every_call_once(run: Run) -> None:
    assert jobs.echo.enqueue_many(({"n": n} for n in range(60)), batch_size=25) == 60
    run.start_worker(concurrency=4)
    run.wait_for(lambda: len(run.events("ran", "echo")) >= 60, 60, "not every call ran")
    time.sleep(0.5)
    assert sorted(e["n"] for e in run.events("ran", "echo")) == list(range(60))


def test_depth_counts_waiting_and_delayed_messages_and_purge_drops_them(run: Run) -> None:
    engine = get_engine()
    assert engine.depth(run.queue) == 0
    jobs.echo.enqueue_many({"n": n} for n in range(5))
    jobs.echo.options(countdown=60).enqueue(n=99)
    run.wait_for(lambda: engine.depth(run.queue) == 6, 10, "depth should count 5 waiting + 1 delayed")
    assert engine.purge(run.queue) == 6
    run.wait_for(lambda: engine.depth(run.queue) == 0, 10, "purge should leave nothing")


def test_a_countdown_longer_than_the_native_delay_hops_and_runs_once(make_run: Callable[..., Run]) -> None:
    run = make_run(TASKBRIDGE_MAX_NATIVE_DELAY="1")
    run.start_worker()
    time.sleep(1.0)
    sent = time.time()
    jobs.echo.options(countdown=3.5).enqueue(n=7)
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "the delayed job never ran")
    assert sent + 3.45 <= ran["time"] <= sent + 6.0, f"ran {ran['time'] - sent:.2f}s after a 3.5s countdown"
    time.sleep(2.0)
    assert len(run.events("ran", "echo")) == 1


def test_a_job_whose_worker_is_killed_runs_again(run: Run) -> None:
    marker = run.workdir / "crashy-marker"
    run.start_worker()
    jobs.crashy.enqueue(str(marker))
    run.wait_for(lambda: run.events("started", "crashy"), 30, "crashy never started")
    run.kill_workers()
    killed_at = time.monotonic()
    run.start_worker()
    run.wait_for(lambda: run.events("ran", "crashy"), 40, "the killed job never ran again")
    assert time.monotonic() - killed_at < 30


def test_hard_timeout_fails_the_job_and_replaces_the_worker_process(run: Run) -> None:
    run.start_worker()
    jobs.stuck.enqueue(1)
    [started] = run.wait_for(lambda: run.events("started", "stuck"), 30, "stuck never started")
    dead = dead_letter_queue(run.queue)
    run.wait_for(lambda: get_engine().depth(dead) == 1, 30, "the hard-timed-out job was not dead-lettered")
    run.wait_for(lambda: "was recycled" in run.logs_text(), 30, "the worker process was not recycled")
    jobs.echo.enqueue(2)
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "the replacement process did not run jobs")
    assert ran["pid"] != started["pid"], "the process that ran past its hard timeout should be replaced"
    assert not run.events("ran", "stuck")
    assert len(run.events("started", "stuck")) == 1, "a hard-timed-out job with no retries runs once"


def test_a_process_over_the_memory_limit_is_replaced_without_losing_jobs(make_run: Callable[..., Run]) -> None:
    run = make_run(TASKBRIDGE_WORKER_MAX_MEMORY_MB="150")
    jobs.hog.enqueue_many({"n": n, "megabytes": 100} for n in range(4))
    run.start_worker(concurrency=1)
    run.wait_for(lambda: len(run.events("ran", "hog")) >= 4, 60, "not every job ran across recycled processes")
    time.sleep(0.5)
    ran = run.events("ran", "hog")
    assert sorted(e["n"] for e in ran) == [0, 1, 2, 3]
    assert len({e["pid"] for e in ran}) >= 2, "the process over the limit should have been replaced"
