"""`taskbridge worker` on the embedded engine stops on SIGINT and SIGTERM as Celery's and Dramatiq's
workers do: after the jobs it runs, whatever disposition of the signals it was started with."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from support import command_env

from taskbridge.testing.jobs import EVENTS_ENV


def _start(tmp_path: Path, ignore_sigint: bool, **extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = command_env(TASKBRIDGE_BROKER_URL="memory://?autostart=0", TASKBRIDGE_DEFAULT_QUEUE="signals", **extra)
    log_path = tmp_path / "worker.log"

    def as_a_background_job() -> None:
        # What a non-interactive shell does to a command it starts with `&`.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskbridge", "worker", "test_metrics_jobs"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=as_a_background_job if ignore_sigint else None,
        )
    return worker, log_path


def _wait_for(log_path: Path, text: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while text not in log_path.read_text():
        assert worker.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in the worker's log:\n{log_path.read_text()}"
        time.sleep(0.05)


def _stopped(worker: subprocess.Popen[bytes], log_path: Path) -> int:
    try:
        return worker.wait(15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)
        raise AssertionError(f"the worker did not stop within 15 s:\n{log_path.read_text()}") from None


def test_a_worker_started_with_sigint_ignored_stops_on_sigint(tmp_path: Path) -> None:
    worker, log_path = _start(tmp_path, ignore_sigint=True, TB_OBSERVED_SEED="1")
    _wait_for(log_path, "job=observed.flaky", worker)
    worker.send_signal(signal.SIGINT)
    assert _stopped(worker, log_path) == 0, log_path.read_text()
    assert "worker: SIGINT received, stopping" in log_path.read_text()


def test_sigterm_stops_the_worker_after_the_job_it_runs(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    worker, log_path = _start(tmp_path, ignore_sigint=False, TB_OBSERVED_PAUSED="2", **{EVENTS_ENV: str(events)})
    deadline = time.monotonic() + 30
    while not events.exists() or '"holding"' not in events.read_text():
        assert worker.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"the job did not start:\n{log_path.read_text()}"
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert _stopped(worker, log_path) == 0, log_path.read_text()
    log = log_path.read_text()
    assert "worker: SIGTERM received, stopping" in log
    assert "job=observed.holder" in log and "outcome=done" in log, log
