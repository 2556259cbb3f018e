"""Metrics across processes: the worker command serves /metrics for the embedded engine; the values
of exited processes are kept and their files removed, so counts survive restarts and the
directory does not grow."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from support import command_env
from test_metrics import free_port, scrape, series

from taskbridge.observability.logging import MaskPasswords, mask_passwords


def test_worker_command_serves_metrics_of_the_embedded_engine(tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "prom"
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskbridge", "worker", "test_metrics_jobs", "--metrics-port", str(port)],
            env=command_env(
                TB_OBSERVED_SEED="1",
                TASKBRIDGE_BROKER_URL="memory://?autostart=0",
                TASKBRIDGE_DEFAULT_QUEUE="seeded",
                # a password that must never reach the log (Redis's passwordless default user takes any)
                TASKBRIDGE_COORDINATION_URL="redis://default:s3cret-pw@127.0.0.1:6379/15",
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        samples = []
        while time.monotonic() < deadline:
            samples = scrape(url)
            if sum(series(samples, "taskbridge_jobs_finished_total", "seeded", "outcome", "reason").values()) >= 8:
                break
            assert worker.poll() is None, log_path.read_text()
            time.sleep(0.1)
        assert series(samples, "taskbridge_jobs_finished_total", "seeded", "outcome", "reason") == {
            ("observed.ok", "done", "none"): 3,
            ("observed.ok", "expired", "none"): 1,
            ("observed.ok", "dead", "invalid"): 1,
            ("observed.fails", "dead", "error"): 1,
            ("observed.flaky", "retried", "error"): 1,
            ("observed.flaky", "dead", "error"): 1,
        }, log_path.read_text()
        # enqueued in the worker process itself (the seed runs on import): counted there
        assert series(samples, "taskbridge_jobs_enqueued_total", "seeded") == {
            ("observed.ok",): 4,
            ("observed.fails",): 1,
            ("observed.flaky",): 1,
        }
        assert series(samples, "taskbridge_job_exceptions_total", "seeded", "exception") == {
            ("observed.fails", "ValueError"): 1,
            ("observed.flaky", "OSError"): 2,
        }
        assert next(s.value for s in samples if s.name == "taskbridge_dead_letter_depth") == 3
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(15)
    text = log_path.read_text()
    assert "s3cret-pw" not in text
    assert "redis://default:***@127.0.0.1:6379/15" in text
    assert list(metrics_dir.glob("*.db")), "the worker did not write its values to PROMETHEUS_MULTIPROC_DIR"


def test_exited_processes_leave_their_counts_and_no_files(tmp_path: Path) -> None:
    """Six rounds of two forked worker processes that each run 3 jobs and exit (as recycled Celery
    or Dramatiq processes do): the counts add up, and the directory holds the same files after
    the sixth round as after the second."""
    script = textwrap.dedent(
        """
        import json, multiprocessing, os, sys
        from taskbridge import configure, get_engine, metrics
        from taskbridge.status import read_metrics
        directory = metrics.use_directory(sys.argv[1])
        metrics.install()
        import test_metrics_jobs as jobs
        server = metrics.serve(0, "127.0.0.1", directory=directory, archive_every=0)
        url = f"http://127.0.0.1:{server.port}/metrics"

        def child():
            configure(broker_url="memory://?autostart=0", default_queue="forked")
            from taskbridge.worker import prepare
            engine = get_engine()
            prepare(engine)
            for n in range(3):
                jobs.ok.enqueue(n)
            engine.start(concurrency=1)
            assert engine.join(10)
            engine.stop()

        rounds = []
        pids = []
        for _ in range(6):
            children = [multiprocessing.get_context("fork").Process(target=child) for _ in range(2)]
            for c in children:
                c.start()
            for c in children:
                c.join(20)
                assert c.exitcode == 0, c.exitcode
                pids.append(c.pid)
            samples = read_metrics(url)
            done = sum(s.value for s in samples if s.name == "taskbridge_jobs_finished_total"
                       and s.labels.get("outcome") == "done" and s.labels.get("queue") == "forked")
            enqueued = sum(s.value for s in samples if s.name == "taskbridge_jobs_enqueued_total"
                           and s.labels.get("queue") == "forked")
            running = sum(s.value for s in samples if s.name == "taskbridge_jobs_in_progress")
            files = {f: os.path.getsize(os.path.join(directory, f)) for f in sorted(os.listdir(directory))}
            rounds.append({"done": done, "enqueued": enqueued, "running": running, "files": files})
        server.stop()
        print(json.dumps({"rounds": rounds, "pids": pids}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "prom")],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rounds = report["rounds"]
    assert [r["done"] for r in rounds] == [6 * (i + 1) for i in range(6)]
    assert [r["enqueued"] for r in rounds] == [6 * (i + 1) for i in range(6)]
    assert all(r["running"] == 0 for r in rounds)
    assert rounds[-1]["files"] == rounds[1]["files"], "the directory grew with the processes restarted"
    names = " ".join(rounds[-1]["files"])
    assert not any(f"_{pid}.db" in names for pid in report["pids"]), names


def test_passwords_in_urls_are_masked_in_every_log_line(caplog: pytest.LogCaptureFixture) -> None:
    assert (
        mask_passwords("amqp://guest:guest@h:5672// and redis://:pw@h/1")
        == "amqp://guest:***@h:5672// and redis://:***@h/1"
    )
    assert mask_passwords("redis://h:6379/0 sqs:// http://x/a:b@c") == "redis://h:6379/0 sqs:// http://x/a:b@c"
    handler = logging.StreamHandler()
    records: list[str] = []
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(MaskPasswords())
    logger = logging.getLogger("tests.masking")
    logger.addHandler(handler)
    try:
        logger.warning("connecting to %s", "amqp://user:topsecret@broker:5672//")
    finally:
        logger.removeHandler(handler)
    assert records == ["connecting to amqp://user:***@broker:5672//"]


def test_a_killed_workers_private_directory_is_removed_by_the_next_worker(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    abandoned = Path(tempfile.gettempdir()) / f"taskbridge-metrics-{dead_pid}-leftover"
    abandoned.mkdir()
    (abandoned / "counter_1-ab.db").write_bytes(b"\0" * 16)
    script = "from taskbridge import metrics; d = metrics.use_directory(); print(d); import shutil; shutil.rmtree(d)"
    result = subprocess.run(
        [sys.executable, "-c", script], env=command_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not abandoned.exists()
    assert Path(result.stdout.strip()).name.startswith("taskbridge-metrics-")


def test_multiprocess_mode_is_refused_once_prometheus_client_is_imported_without_it(tmp_path: Path) -> None:
    """prometheus-client picks its mode on import: a worker set up after that would count nothing,
    so it says so instead of serving empty metrics."""
    script = (
        "import prometheus_client\n"
        "from taskbridge import ConfigurationError\n"
        "from taskbridge.observability import multiprocess\n"
        "try:\n"
        "    multiprocess.use_directory()\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=command_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "PROMETHEUS_MULTIPROC_DIR" in result.stdout
    with_variable = subprocess.run(
        [sys.executable, "-c", script.replace("print(exc)", "raise")],
        env=command_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_variable.returncode == 0, with_variable.stderr


def test_the_metrics_endpoint_goes_away_with_a_killed_worker(tmp_path: Path) -> None:
    """A worker whose engine forks job processes serves /metrics from a process of its own; when
    the worker is killed (SIGKILL, no cleanup), that process exits too and frees the port."""
    from test_metrics import harness_for

    with harness_for("celery-redis", tmp_path) as h:
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        h.start_workers(1, 1, args=["--metrics-port", str(port)])
        h.wait_for(lambda: scrape(url), 60, "the worker never served /metrics")
        worker = h.workers.pop()
        try:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            h.wait_for(lambda: not _answers(url), 30, "/metrics still answers after the worker was killed")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    from taskbridge.status import read_metrics

    try:
        read_metrics(url, timeout=5)
    except OSError:
        return False
    return True
