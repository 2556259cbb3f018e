"""What Celery's own tools show of taskbridge jobs: the worker log, task events (Flower, ``celery
events``), under the taskbridge job id; and ``taskbridge worker --reload`` on the Celery engine."""

from __future__ import annotations

import os
import subprocess
import sys
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

SETTINGS: dict[str, str | None] = {"TASKBRIDGE_VISIBILITY_TIMEOUT": "10"}


@pytest.fixture(params=["redis", "amqp"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(
        f"celery-{request.param}", tmp_path, "celery_jobs", {**SETTINGS, "TASKBRIDGE_CELERY_TASK_EVENTS": "true"}
    ) as harness:
        yield harness


def _ids(ref: Any) -> str:
    assert ref is not None
    return str(ref.id)


def _publish_expired(run: Harness) -> str:
    """A job past its expiry when the worker gets it: taskbridge drops it unrun."""
    envelope = Envelope(job=jobs.echo.name, queue=run.queue, kwargs={"n": 3}, expires_at=time.time() - 1)
    get_engine().publish([envelope])
    return envelope.id


def test_celerys_log_tells_each_outcome_under_the_taskbridge_id(run: Harness) -> None:
    run.start_workers()
    done = _ids(jobs.echo.enqueue(1))
    dead = _ids(jobs.boom.enqueue(2))
    expired = _publish_expired(run)
    run.wait_for(lambda: run.events("outcome:dead", "boom") and run.events("outcome:done", "echo"), 60, "no outcomes")

    def logged() -> str:
        text = run.worker_logs()
        wanted = [
            f"Task cq.echo[{done}] succeeded",
            f"Task cq.boom[{dead}] retry:",
            f"Task cq.boom[{dead}] raised",
            f"Task cq.echo[{expired}] ignored",
        ]
        return text if all(line in text for line in wanted) else ""

    log = run.wait_for(logged, 30, "Celery's log should show the outcomes under the job ids")
    assert f"Task cq.boom[{dead}] succeeded" not in log, "a dead-lettered job is not a success"
    failed = next(line for line in log.splitlines() if f"Task cq.boom[{dead}] raised" in line)
    assert "ERROR" in failed and "DeadLettered" in failed and "failed on attempt 2 of 2: ValueError: boom 2" in failed
    assert 'raise ValueError(f"boom {n}")' in log, "the job's own traceback is shown with the failure"
    retried = next(line for line in log.splitlines() if f"Task cq.boom[{dead}] retry:" in line)
    assert "attempt 1 failed" in retried and "ValueError: boom 2" in retried
    assert f"id={dead}" in log, "taskbridge's own log line shows the same id"


def test_task_events_reach_a_celery_event_receiver_with_the_taskbridge_ids(run: Harness) -> None:
    app = get_engine().app  # type: ignore[attr-defined]
    seen: list[dict[str, Any]] = []
    connection = app.connection_for_read()
    receiver = app.events.Receiver(connection, handlers={"*": seen.append})
    capture = threading.Thread(target=receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True)
    capture.start()
    try:
        run.start_workers()
        # Heartbeats come every two seconds: once one arrived, the receiver is bound and sees what follows.
        run.wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in seen), 60, "no worker heartbeat event")
        done = _ids(jobs.echo.enqueue(1))
        dead = _ids(jobs.boom.enqueue(2))
        expired = _publish_expired(run)

        def kinds(uuid: str) -> set[str]:
            return {e["type"] for e in list(seen) if e.get("uuid") == uuid}

        run.wait_for(lambda: {"task-received", "task-succeeded"} <= kinds(done), 60, "no events of the echo job")
        run.wait_for(lambda: {"task-retried", "task-failed"} <= kinds(dead), 60, "no retry and failure events")
        run.wait_for(lambda: "task-revoked" in kinds(expired), 60, "no revoked event for the expired job")
        assert "task-succeeded" not in kinds(dead) | kinds(expired)
        failed = next(e for e in list(seen) if e["type"] == "task-failed" and e["uuid"] == dead)
        assert "failed on attempt 2 of 2" in failed["exception"]
    finally:
        receiver.should_stop = True
        capture.join(10)
        connection.release()


RELOADED_JOBS = """
from taskbridge import job
from taskbridge.testing.jobs import record

VERSION = {version}


@job(name="reloaded.which")
def which(n: int) -> None:
    record("ran", job="which", n=n, version=VERSION)
"""


def test_worker_reload_restarts_on_a_code_change_and_runs_the_new_code(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    module = code / "reloaded_jobs.py"
    module.write_text(RELOADED_JOBS.format(version=1))
    with open_harness("celery-redis", tmp_path, "reloaded_jobs", SETTINGS) as run:
        log_path = tmp_path / "reload-worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "taskbridge", "worker", "reloaded_jobs", "--reload", "--concurrency", "1"],
                cwd=code,
                env={**os.environ, **run.env, "PYTHONPATH": str(code), "TASKBRIDGE_DEFAULT_QUEUE": run.queue},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run.workers.append(worker)  # stopped with the harness
        engine = get_engine()

        def send(n: int) -> None:
            engine.publish([Envelope(job="reloaded.which", queue=run.queue, kwargs={"n": n})])

        def versions() -> dict[int, int]:
            return {e["n"]: e["version"] for e in run.events("ran", "which")}

        def started() -> int:
            return log_path.read_text(errors="replace").count("taskbridge worker: engine=celery")

        send(1)
        run.wait_for(lambda: 1 in versions(), 60, f"the first job never ran:\n{log_path.read_text()}")
        module.write_text(RELOADED_JOBS.format(version=2))
        run.wait_for(lambda: started() == 2, 60, f"the worker did not start again:\n{log_path.read_text()}")
        send(2)
        run.wait_for(lambda: 2 in versions(), 60, f"the job sent after the change never ran:\n{log_path.read_text()}")
        assert versions() == {1: 1, 2: 2}, f"job 1 ran again after the restart:\n{log_path.read_text()}"
        # The restart stops the worker as SIGTERM does: the jobs it took are acknowledged before
        # the warm shutdown, which could miss a job just finished and leave it to run again.
        assert "the jobs this worker took have finished: it stops" in log_path.read_text()
        assert worker.poll() is None, "the worker restarts in place: the same process goes on"
