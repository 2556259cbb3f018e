"""Switching with a backlog, as a user does it: the old workers stop half-way through, the new ones
start on the same broker, ``taskbridge move`` brings the rest over, and every job runs once.

Sizes fit the suite's time budget; ``TASKBRIDGE_SWITCH_JOBS=500`` runs the engine switches at the
issue's size, ``TASKBRIDGE_SWITCH_BACKLOG=20000`` the transport switches (Redis -> RabbitMQ, and
RabbitMQ -> SQS on each engine) at the issue's size: 3,000 jobs by default, 300 on SQS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from support import open_harness

from taskbridge.config import load_settings
from taskbridge.dispatch import schedule
from taskbridge.engine import Engine, load_engine_factory, settle
from taskbridge.envelope import Envelope, decode
from taskbridge.testing import KNOWN, Harness
from taskbridge.wire import unwrap

ENGINES = ("celery", "dramatiq")
JOBS = "backlog_jobs"
COUNTDOWN = 20.0
"""The issue's countdown: the switch, the move and the rest of the jobs take about as long, so it
costs the test next to nothing."""
SWITCH_JOBS = int(os.environ.get("TASKBRIDGE_SWITCH_JOBS", "0"))
SWITCH_BACKLOG = os.environ.get("TASKBRIDGE_SWITCH_BACKLOG")
SQS_BACKLOG = 300
"""moto's SQS server walks every message of a queue for each one it receives (and more), so a queue
of thousands answers in seconds: the SQS switch is sized well below the others."""
SQS_FRESH = 100
"""At most this many jobs enqueued on SQS during the move (10 every half second), for the same reason."""


def _move(from_engine: str, from_url: str, to_engine: str, to_url: str, queue: str) -> dict:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskbridge",
            "move",
            "--json",
            "--queues",
            queue,
            "--from-engine",
            from_engine,
            "--from-broker",
            from_url,
            "--to-engine",
            to_engine,
            "--to-broker",
            to_url,
        ],
        capture_output=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert process.returncode == 0, process.stderr.decode()
    (report,) = json.loads(process.stdout)
    return dict(report)


def _backlog(queue: str, count: int, markers: Path) -> dict[str, list[Envelope]]:
    """``count`` jobs in the issue's proportions: a fifth with a countdown, a tenth under a lock and
    a tenth failing once and retrying; the rest plain."""
    kinds = {
        "countdown": [Envelope(job=f"{JOBS}.noop", queue=queue, args=[n]) for n in range(count // 5)],
        "locked": [Envelope(job=f"{JOBS}.locked", queue=queue, args=[n]) for n in range(count // 10)],
        "retrying": [
            Envelope(job=f"{JOBS}.retried", queue=queue, args=[str(markers / f"retried-{n}")])
            for n in range(count // 10)
        ],
    }
    kinds["plain"] = [Envelope(job=f"{JOBS}.noop", queue=queue, args=[n]) for n in range(count - 2 * (count // 5))]
    return kinds


def _size(transport: str) -> int:
    # moto answers a receive in about 0.4 s here, so SQS workers get through a few jobs a second.
    return SWITCH_JOBS or (40 if transport == "sqs" else 300)


@pytest.mark.parametrize("first", ENGINES)
@pytest.mark.parametrize("transport", ["redis", "amqp", "sqs"])
def test_switching_engine_mid_backlog_runs_every_job_once(first: str, transport: str, tmp_path: Path) -> None:
    second = ENGINES[1 - ENGINES.index(first)]
    with open_harness(f"{first}-{transport}", tmp_path, JOBS) as harness:
        url = harness.combination.broker_url
        kinds = _backlog(harness.queue, _size(transport), tmp_path)
        started = time.time()
        schedule(harness.engine, kinds["countdown"], COUNTDOWN)
        for group in ("plain", "locked", "retrying"):
            schedule(harness.engine, kinds[group], 0)
        ids = {e.id for group in kinds.values() for e in group}

        harness.start_workers(env={"TASKBRIDGE_ENGINE": first})
        harness.wait_for(lambda: len(harness.events("outcome:done")) >= 10, 90, f"the {first} worker got going")
        _stop(harness)  # the old workers stop half-way through
        ran_before = {e["id"] for e in harness.events("outcome:done")}
        assert len(ran_before) < len(ids), "stopped half-way"

        harness.start_workers(env={"TASKBRIDGE_ENGINE": second})
        if transport == "redis":  # the engines' layouts share nothing there: the rest is stranded
            new_log = max(tmp_path.glob("worker-*.log"))
            harness.wait_for(lambda: "Move them with" in new_log.read_text(errors="replace"), 60, "no backlog warning")
        report = _move(first, url, second, url, harness.queue)
        assert report["malformed"] == 0
        if transport == "redis":
            assert report["moved"] > 0

        done = lambda: {e["id"] for e in harness.events("outcome:done")}  # noqa: E731
        harness.wait_for(lambda: done() >= ids, 240, "every job ran")
        _stop(harness)  # whatever still runs finishes: a second run would show now
        for worker_log in tmp_path.glob("worker-*.log"):
            assert "PRECONDITION_FAILED" not in worker_log.read_text(errors="replace")

        finished = harness.events("outcome:done")
        counts = Counter(e["id"] for e in finished)
        assert set(counts) == ids
        twice = {job_id for job_id, n in counts.items() if n > 1}
        assert not twice, f"ran more than once: {sorted(twice)}"
        at = {e["id"]: e for e in finished}
        assert all(at[e.id]["attempt"] == 2 for e in kinds["retrying"]), "a failed job finishes on its retry"
        assert all(at[e.id]["time"] >= started + COUNTDOWN for e in kinds["countdown"]), "none before it is due"


def _backlog_size(target: str) -> int:
    return int(SWITCH_BACKLOG) if SWITCH_BACKLOG else (SQS_BACKLOG if target.endswith("-sqs") else 3000)


@pytest.mark.timeout(900)  # the 20,000 jobs on moto take minutes (TASKBRIDGE_SWITCH_BACKLOG)
@pytest.mark.parametrize(
    ("source_name", "target_name"),
    [("celery-redis", "celery-amqp"), ("celery-amqp", "celery-sqs"), ("dramatiq-amqp", "dramatiq-sqs")],
)
def test_moving_transport_while_producers_enqueue_on_the_new_one(
    source_name: str, target_name: str, tmp_path: Path
) -> None:
    """The seeds' switch (Redis -> RabbitMQ) and the next one (RabbitMQ -> SQS): a backlog moved
    under one engine while producers already enqueue on the new transport; every job stored there,
    each once (a copy only where the move reports one)."""
    engine = KNOWN[target_name].engine
    with open_harness(target_name, tmp_path, JOBS) as harness:
        source = _engine(source_name)
        try:
            count = _backlog_size(target_name)
            backlog = [Envelope(job=f"{JOBS}.noop", queue=harness.queue, args=[n]) for n in range(count)]
            for start in range(0, len(backlog), 1000):
                schedule(source, backlog[start : start + 1000], 0)
            fresh: list[Envelope] = []
            stop = threading.Event()

            sqs = target_name.endswith("-sqs")
            size, pause, most = (10, 0.5, SQS_FRESH) if sqs else (50, 0.0, None)

            def produce() -> None:
                producer = _engine(target_name)
                try:
                    while not stop.is_set() and (most is None or len(fresh) < most):
                        batch = [Envelope(job=f"{JOBS}.noop", queue=harness.queue, args=[-1]) for _ in range(size)]
                        schedule(producer, batch, 0)
                        fresh.extend(batch)
                        stop.wait(pause)
                finally:
                    producer.close()

            producing = threading.Thread(target=produce)
            producing.start()
            try:
                report = _move(
                    engine, KNOWN[source_name].broker_url, engine, KNOWN[target_name].broker_url, harness.queue
                )
            finally:
                stop.set()
                producing.join(60)
            assert (report["moved"], report["malformed"], report["left"]) == (len(backlog), 0, 0)
            assert source.depth(harness.queue) == 0
        finally:
            source.close()

        stored = _drain(harness.engine, harness.queue)
        expected = {e.id for e in backlog} | {e.id for e in fresh}
        assert set(stored) == expected, f"{len(expected - set(stored))} jobs lost"
        assert sum(n - 1 for n in stored.values()) <= report["possibly_twice"]
        assert fresh, "producers enqueued during the move"


def _stop(harness: Harness) -> None:
    """Stop the workers as a service manager should (SIGTERM to the main process only, as systemd's
    KillMode=mixed): running jobs finish, held ones go back. A SIGTERM to Celery's pool processes
    too would kill a job mid-run, and a job whose outcome is unknown runs again (at least once)."""
    for worker in harness.workers:
        worker.send_signal(signal.SIGTERM)
    for worker in harness.workers:
        worker.wait(120)
    harness.stop_workers()  # whatever is left of the process groups


def _engine(name: str) -> Engine:
    combination = KNOWN[name]
    return load_engine_factory(combination.engine)(
        load_settings(engine=combination.engine, broker_url=combination.broker_url)
    )


DRAIN_TAKE = 100
"""Items per take when the test reads the target back: on moto a take of 1,000 outlasts the take's
visibility timeout, so its first messages would come round again within it."""


def _drain(engine: Engine, queue: str) -> Counter[str]:
    stored: Counter[str] = Counter()
    while taken := engine.take(queue, DRAIN_TAKE):
        stored.update(decode(unwrap(item.body).envelope or "").id for item in taken)
        settle(taken, ack=True)
    return stored
