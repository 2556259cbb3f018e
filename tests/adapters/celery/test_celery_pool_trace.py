"""A pool process runs a job that simply ran without Celery's tracer (taskbridge_celery.pool_trace);
what users see of each outcome stays Celery's: task events, the failure log line, and Celery's task
signals for whoever listens. Every job runs once per attempt."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery_jobs as jobs
import pytest
from support import open_harness

from taskbridge import Envelope, get_engine
from taskbridge.testing import Harness

# Celery's own default level, below taskbridge's INFO.
QUIET = {"TASKBRIDGE_VISIBILITY_TIMEOUT": "10", "TASKBRIDGE_CELERY_LOGLEVEL": "WARNING"}


@pytest.fixture(params=["redis", "amqp"])
def combination(request: pytest.FixtureRequest) -> str:
    return f"celery-{request.param}"


@pytest.fixture
def quiet(combination: str, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(combination, tmp_path, "celery_jobs", {**QUIET, "TASKBRIDGE_CELERY_TASK_EVENTS": "true"}) as run:
        yield run


def _events_of(run: Harness, seen: list[dict[str, Any]]) -> threading.Thread:
    app = get_engine().app  # type: ignore[attr-defined]
    connection = app.connection_for_read()
    receiver = app.events.Receiver(connection, handlers={"*": seen.append})
    capture = threading.Thread(target=receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True)
    capture.receiver, capture.connection = receiver, connection  # type: ignore[attr-defined]
    capture.start()
    return capture


def test_each_outcome_runs_once_and_shows_in_celerys_events(quiet: Harness) -> None:
    run = quiet
    seen: list[dict[str, Any]] = []
    capture = _events_of(run, seen)
    try:
        run.start_workers()
        run.wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in seen), 60, "no worker heartbeat event")
        done = [str(jobs.echo.enqueue(n).id) for n in range(20)]
        dead = str(jobs.boom.enqueue(7).id)
        expired = Envelope(job=jobs.echo.name, queue=run.queue, kwargs={"n": 99}, expires_at=time.time() - 1)
        get_engine().publish([expired])

        def kinds(uuid: str) -> set[str]:
            return {e["type"] for e in list(seen) if e.get("uuid") == uuid}

        run.wait_for(lambda: all("task-succeeded" in kinds(i) for i in done), 60, "echo jobs did not succeed")
        run.wait_for(lambda: {"task-retried", "task-failed"} <= kinds(dead), 60, "no retry and failure events")
        run.wait_for(lambda: "task-revoked" in kinds(expired.id), 60, "no revoked event for the expired job")
        time.sleep(1)  # a job run twice would show by now
        ran = sorted(e["n"] for e in run.events("ran", "echo"))
        assert ran == list(range(20)), "each echo job ran exactly once"
        assert [e["n"] for e in run.events("started", "boom")] == [7, 7], "one run per attempt, two attempts"
        succeeded = next(e for e in list(seen) if e["type"] == "task-succeeded" and e["uuid"] == done[0])
        assert succeeded["result"] == "None" and succeeded["runtime"] > 0
        assert "task-succeeded" not in kinds(dead) | kinds(expired.id)
        failed = next(e for e in list(seen) if e["type"] == "task-failed" and e["uuid"] == dead)
        assert "failed on attempt 2 of 2" in failed["exception"]
        log = run.worker_logs()
        assert f"Task cq.boom[{dead}] raised" in log and "DeadLettered" in log, "Celery logs the failure"
    finally:
        capture.receiver.should_stop = True  # type: ignore[attr-defined]
        capture.join(10)
        capture.connection.release()  # type: ignore[attr-defined]


def test_celerys_task_signals_reach_their_handlers(combination: str, tmp_path: Path) -> None:
    with open_harness(combination, tmp_path, "celery_signal_jobs", QUIET) as run:
        run.start_workers()
        ids = [str(jobs.echo.enqueue(n).id) for n in range(5)]
        run.wait_for(lambda: len(run.events("ran", "echo")) == 5, 60, "echo jobs did not run")
        run.wait_for(lambda: len(run.events("celery:postrun")) == 5, 30, "no task_postrun signals")
        for kind in ("celery:prerun", "celery:postrun", "celery:success"):
            assert sorted(e["id"] for e in run.events(kind)) == sorted(ids), f"{kind} for each job"
            assert {e["task"] for e in run.events(kind)} == {jobs.echo.name}
        assert {e["state"] for e in run.events("celery:postrun")} == {"SUCCESS"}
        assert sorted(e["n"] for e in run.events("ran", "echo")) == list(range(5)), "each ran once"
