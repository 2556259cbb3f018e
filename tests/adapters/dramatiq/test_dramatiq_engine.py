"""End-to-end tests of the Dramatiq adapter: real worker processes on real Redis, RabbitMQ and moto's SQS."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq_jobs as jobs
import pytest
from support import open_harness

from taskbridge import get_engine
from taskbridge.layout import dead_letter_queue
from taskbridge.testing import Harness
from taskbridge.testing import jobs as contract_jobs

# The settings these tests were written for: a 5s visibility timeout, quick hard-timeout recycling,
# and the defaults for the rest of the contract settings (no delay cap unless a test sets one).
SETTINGS: dict[str, str | None] = {
    "TASKBRIDGE_VISIBILITY_TIMEOUT": "5",
    "TASKBRIDGE_MAX_NATIVE_DELAY": None,
    "TASKBRIDGE_LOCK_RETRY": None,
    "TASKBRIDGE_INLINE_WAIT_MAX": None,
    "TASKBRIDGE_DEFAULT_TIMEOUT": None,
    "TASKBRIDGE_DRAMATIQ_HARD_TIMEOUT_GRACE": "1",
    "TASKBRIDGE_DRAMATIQ_RESPAWN_DELAY": "0.2",
}


@pytest.fixture(params=["redis", "amqp", "sqs"])
def make_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Builds the test's harness, with Dramatiq workers importing ``dramatiq_jobs`` and extra
    settings (TASKBRIDGE_*=value); skipped when its server is down (failed when CI=true)."""
    with contextlib.ExitStack() as stack:

        def make(**settings: str) -> Harness:
            return stack.enter_context(
                open_harness(f"dramatiq-{request.param}", tmp_path, "dramatiq_jobs", {**SETTINGS, **settings})
            )

        yield make


@pytest.fixture
def run(make_run: Callable[..., Harness]) -> Harness:
    return make_run()


def test_enqueue_runs_the_job_with_its_arguments(run: Harness) -> None:
    run.start_workers()
    jobs.echo.enqueue(1, payload={"text": "zürich ✓", "list": [1, None]})
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "echo never ran")
    assert (ran["n"], ran["payload"]) == (1, {"text": "zürich ✓", "list": [1, None]})


def test_enqueue_many_runs_every_call_once(run: Harness) -> None:
    assert jobs.echo.enqueue_many(({"n": n} for n in range(60)), batch_size=25) == 60
    run.start_workers(concurrency=4)
    run.wait_for(lambda: len(run.events("ran", "echo")) >= 60, 60, "not every call ran")
    time.sleep(0.5)
    assert sorted(e["n"] for e in run.events("ran", "echo")) == list(range(60))


def test_enqueue_many_with_a_countdown_runs_every_call_once_when_due(run: Harness) -> None:
    run.start_workers(concurrency=4)
    sent = time.time()
    assert jobs.echo.options(countdown=2).enqueue_many(({"n": n} for n in range(30)), batch_size=10) == 30
    run.wait_for(lambda: len(run.events("ran", "echo")) >= 30, 60, "not every call ran")
    time.sleep(0.5)
    ran = run.events("ran", "echo")
    assert sorted(e["n"] for e in ran) == list(range(30))
    assert min(e["time"] for e in ran) >= sent + 2


def test_depth_counts_waiting_and_delayed_messages_and_purge_drops_them(run: Harness) -> None:
    engine = get_engine()
    assert engine.depth(run.queue) == 0
    jobs.echo.enqueue_many({"n": n} for n in range(5))
    jobs.echo.options(countdown=60).enqueue(n=99)
    run.wait_for(lambda: engine.depth(run.queue) == 6, 10, "depth should count 5 waiting + 1 delayed")
    assert engine.purge(run.queue) == 6
    run.wait_for(lambda: engine.depth(run.queue) == 0, 10, "purge should leave nothing")


def test_a_countdown_longer_than_the_native_delay_hops_and_runs_once(make_run: Callable[..., Harness]) -> None:
    run = make_run(TASKBRIDGE_MAX_NATIVE_DELAY="1")
    run.start_workers()
    time.sleep(1.0)
    sent = time.time()
    jobs.echo.options(countdown=3.5).enqueue(n=7)
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "the delayed job never ran")
    assert sent + 3.45 <= ran["time"] <= sent + 6.0, f"ran {ran['time'] - sent:.2f}s after a 3.5s countdown"
    time.sleep(2.0)
    assert len(run.events("ran", "echo")) == 1


def test_a_job_whose_worker_is_killed_runs_again(run: Harness) -> None:
    marker = run.workdir / "crashy-marker"
    run.start_workers()
    contract_jobs.crashy.enqueue(uuid.uuid4().hex, str(marker))
    run.wait_for(lambda: run.events("started", "crashy"), 30, "crashy never started")
    run.kill_workers()
    killed_at = time.monotonic()
    run.start_workers()
    run.wait_for(lambda: run.events("ran", "crashy"), 40, "the killed job never ran again")
    assert time.monotonic() - killed_at < 30


def test_hard_timeout_fails_the_job_and_replaces_the_worker_process(run: Harness) -> None:
    run.start_workers()
    jobs.stuck.enqueue(1)
    [started] = run.wait_for(lambda: run.events("started", "stuck"), 30, "stuck never started")
    dead = dead_letter_queue(run.queue)
    run.wait_for(lambda: get_engine().depth(dead) == 1, 30, "the hard-timed-out job was not dead-lettered")
    run.wait_for(lambda: "was recycled" in run.worker_logs(), 30, "the worker process was not recycled")
    jobs.echo.enqueue(2)
    [ran] = run.wait_for(lambda: run.events("ran", "echo"), 30, "the replacement process did not run jobs")
    assert ran["pid"] != started["pid"], "the process that ran past its hard timeout should be replaced"
    assert not run.events("ran", "stuck")
    assert len(run.events("started", "stuck")) == 1, "a hard-timed-out job with no retries runs once"


def test_a_process_over_the_memory_limit_is_replaced_without_losing_jobs(make_run: Callable[..., Harness]) -> None:
    run = make_run(TASKBRIDGE_WORKER_MAX_MEMORY_MB="150")
    jobs.hog.enqueue_many({"n": n, "megabytes": 100} for n in range(4))
    run.start_workers(concurrency=1)
    run.wait_for(lambda: len(run.events("ran", "hog")) >= 4, 60, "not every job ran across recycled processes")
    time.sleep(0.5)
    ran = run.events("ran", "hog")
    assert sorted(e["n"] for e in ran) == [0, 1, 2, 3]
    assert len({e["pid"] for e in ran}) >= 2, "the process over the limit should have been replaced"


def _ctrl_c(worker: subprocess.Popen[bytes]) -> None:
    """What a terminal sends on Ctrl-C: SIGINT to every process of the foreground process group."""
    os.killpg(worker.pid, signal.SIGINT)


@pytest.mark.parametrize("make_run", ["redis", "amqp"], indirect=True)
def test_ctrl_c_mid_drain_finishes_the_running_jobs_and_none_runs_twice(make_run: Callable[..., Harness]) -> None:
    """Ctrl-C in the worker's terminal: its processes stop taking messages, the running jobs finish and
    are acknowledged, the prefetched ones go back; it exits within seconds, the next worker runs the rest."""
    run = make_run()
    count = 300
    # 20 ms each: about three seconds of work, so the stop lands mid-drain however fast the worker is.
    jobs.step.enqueue_many({"n": n, "pause": 0.02} for n in range(count))
    run.start_workers(concurrency=2)

    def ran() -> Counter[int]:
        return Counter(e["n"] for e in run.events("ran", "step"))

    run.wait_for(lambda: len(ran()) >= 60, 90, "the drain never started")
    (worker,) = run.workers
    started = time.monotonic()
    _ctrl_c(worker)
    worker.wait(120)
    took = time.monotonic() - started
    stopped_at = len(ran())
    run.stop_workers()
    assert stopped_at < count, "stopped mid-drain"
    run.start_workers(concurrency=2)
    run.wait_for(lambda: len(ran()) >= count, 120, "every job ran")
    time.sleep(float(SETTINGS["TASKBRIDGE_VISIBILITY_TIMEOUT"] or 0) + 5)  # a message left unacknowledged comes back
    run.stop_workers()
    counts = ran()
    twice = {n: c for n, c in counts.items() if c > 1}
    print(f"{run.combination}: stopped in {took:.1f}s after {stopped_at} jobs; ran again: {twice}")
    assert sorted(counts) == list(range(count))
    assert not twice, f"ran more than once: {twice}"
    assert took < 15, f"the stop took {took:.1f}s"


@pytest.mark.parametrize("make_run", ["redis", "amqp"], indirect=True)
def test_a_second_ctrl_c_stops_the_worker_at_once_and_its_running_job_runs_again(
    make_run: Callable[..., Harness],
) -> None:
    """Ctrl-C twice: the first waits for the running job, the second kills the worker's processes;
    the job was not acknowledged, so the next worker runs it."""
    run = make_run()
    jobs.nap.enqueue(1, 600)
    run.start_workers(concurrency=1)
    run.wait_for(lambda: len(run.events("started", "nap")) == 1, 90, "the job started")
    (worker,) = run.workers
    _ctrl_c(worker)
    run.wait_for(lambda: "stopping (waiting up to" in run.worker_logs(), 30, "the first Ctrl-C was taken")
    time.sleep(2)
    assert worker.poll() is None, f"the first Ctrl-C did not wait for the running job\n{run.worker_logs(4000)}"
    _ctrl_c(worker)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop on a second Ctrl-C\n{run.worker_logs(4000)}")
    run.stop_workers()
    assert not run.events("ran", "nap"), "the job was ended, not finished"
    run.start_workers(concurrency=1)
    run.wait_for(lambda: len(run.events("started", "nap")) == 2, 90, "the ended job did not run again")
