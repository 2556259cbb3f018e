"""SIGKILL to a worker's whole process group in the middle of a drain (a crash, the OOM killer, a
lost machine): the next worker runs every job, none is lost, and only the jobs the killed worker
had taken run again. A kill is not a failed attempt: the job runs again as the same attempt."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import kill_drain_jobs as jobs
import pytest
from support import open_harness

from taskbridge.testing import Harness

SHORT = 200
LONG = 3
LONG_SECONDS = 4.0
VISIBILITY = 10
"""Seconds after which Redis and SQS hand a killed worker's messages out again."""

COMBINATIONS = ["celery-redis", "celery-amqp", "celery-sqs", "dramatiq-redis", "dramatiq-amqp", "dramatiq-sqs"]


def _counts(harness: Harness, kind: str) -> Counter[int]:
    return Counter(event["n"] for event in harness.events(kind, "work"))


@pytest.mark.processes
@pytest.mark.parametrize("name", COMBINATIONS)
def test_a_worker_killed_mid_drain_loses_nothing_and_repeats_only_the_jobs_it_had_taken(
    name: str, tmp_path: Path
) -> None:
    settings: dict[str, str | None] = {"TASKBRIDGE_VISIBILITY_TIMEOUT": str(VISIBILITY)}
    with open_harness(name, tmp_path, "kill_drain_jobs", settings) as run:
        long_jobs = set(range(SHORT, SHORT + LONG))
        jobs.work.enqueue_many({"n": n, "seconds": LONG_SECONDS} for n in sorted(long_jobs))
        jobs.work.enqueue_many({"n": n, "seconds": 0.05} for n in range(SHORT))
        run.start_workers(concurrency=LONG + 1)
        run.wait_for(
            lambda: set(_counts(run, "started")) >= long_jobs and len(_counts(run, "ran")) >= 10,
            90,
            "the long jobs never started beside the short ones",
        )
        run.kill_workers()
        started_before_kill = set(_counts(run, "started"))
        ran_before_kill = set(_counts(run, "ran"))
        assert not long_jobs & ran_before_kill, "the long jobs ended before the kill: the test proves nothing"
        assert len(ran_before_kill) < SHORT, "the drain ended before the kill: the test proves nothing"

        run.start_workers(concurrency=LONG + 1)
        everything = set(range(SHORT + LONG))
        run.wait_for(lambda: set(_counts(run, "ran")) == everything, 120, "jobs were lost with the killed worker")
        # A message the killed worker held comes back after the visibility timeout at the latest:
        # wait that long for any late second run.
        time.sleep(VISIBILITY + 5)
        run.stop_workers()

        ran = _counts(run, "ran")
        again = {n for n, times in ran.items() if times > 1}
        print(f"{name}: {len(ran_before_kill)} ran before the kill; ran again: {sorted(again)}")
        assert set(ran) == everything
        assert again <= started_before_kill, f"jobs not taken before the kill ran twice: {again - started_before_kill}"
        attempts = Counter(event["attempt"] for event in run.events("outcome:done", "work"))
        assert set(attempts) == {1}, f"a kill was counted as a failed attempt: {attempts}"
        assert not run.events("outcome:dead", "work") and not run.events("outcome:retry", "work")
