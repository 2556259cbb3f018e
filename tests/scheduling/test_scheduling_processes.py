"""Periodic jobs across real scheduler and worker processes sharing one Redis: one leader, failover
after SIGKILL, the lease given up on SIGTERM, missed runs after downtime, --with-scheduler."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support import open_harness

from taskbridge.coordination import RedisCoordination
from taskbridge.scheduling import cron, state
from taskbridge.scheduling.lease import LEASE_KEY
from taskbridge.testing.harness import DEFAULT_COORDINATION, Harness

pytestmark = [pytest.mark.redis, pytest.mark.processes]

COMBINATION = "dramatiq-redis"


def _store(harness: Harness) -> RedisCoordination:
    url = harness.env.get("TASKBRIDGE_COORDINATION_URL", DEFAULT_COORDINATION)
    return RedisCoordination(url, harness.env["TASKBRIDGE_NAMESPACE"])


def _seconds(events: list[dict[str, object]]) -> list[float]:
    return sorted(datetime.fromisoformat(str(event["scheduled_at"])).timestamp() for event in events)


def test_when_the_leader_is_killed_another_scheduler_takes_over_within_the_lease_losing_no_run(
    tmp_path: Path,
) -> None:
    lease = 2.0
    with open_harness(COMBINATION, tmp_path, "scheduling_jobs") as harness:
        harness.start_workers()
        harness.start_schedulers(count=2, lease=lease)
        [first] = harness.wait_for(lambda: harness.events("outcome:scheduled", "tick")[:1], 60, "nothing was fired")
        leader = next(p for p in harness.schedulers if p.pid == first["pid"])
        os.killpg(leader.pid, signal.SIGKILL)
        killed_at = time.time()
        leader.wait(10)
        harness.schedulers.remove(leader)
        taken_over = harness.wait_for(
            lambda: [e for e in harness.events("outcome:scheduled", "tick") if e["pid"] != first["pid"]][:1],
            60,
            "no scheduler took over from the killed leader",
        )
        failover = taken_over[0]["time"] - killed_at
        assert failover <= lease + 8.0, f"took {failover:.1f}s to take over with a {lease:g}s lease"
        harness.wait_for(
            lambda: len([e for e in harness.events("outcome:scheduled", "tick") if e["pid"] != first["pid"]]) >= 3,
            60,
            "the new leader stopped firing",
        )
        harness.stop_schedulers()
        fired = _seconds(harness.events("outcome:scheduled", "tick"))
        assert len(fired) == len(set(fired)), "a run was fired twice"
        assert fired == [fired[0] + n for n in range(len(fired))], f"a run was lost in the failover: {fired}"


def test_a_scheduler_stopped_with_sigterm_gives_its_lease_up(tmp_path: Path) -> None:
    with open_harness(COMBINATION, tmp_path, "scheduling_jobs") as harness:
        harness.start_schedulers(count=1, lease=60.0)
        harness.wait_for(lambda: harness.events("outcome:scheduled", "tick"), 60, "the scheduler never led")
        store = _store(harness)
        try:
            assert store.lock_ttl(LEASE_KEY) is not None
            harness.stop_schedulers(grace=20.0)
            assert store.lock_ttl(LEASE_KEY) is None, "the lease is still held: the next leader would wait 60s"
        finally:
            store.close()


def test_after_a_downtime_a_restarted_scheduler_catches_up_once_or_skips_per_job(tmp_path: Path) -> None:
    with open_harness(COMBINATION, tmp_path, "scheduling_jobs") as harness:
        store = _store(harness)
        long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()  # stopped since then
        try:
            for name in ("scheduling_jobs.new_year", "scheduling_jobs.new_year_catch_up"):
                state.advance(store, name, None, long_ago)
            harness.start_workers()
            harness.start_schedulers(count=1)
            [ran] = harness.wait_for(lambda: harness.events("ran", "new_year_catch_up"), 60, "no catch-up run")
            latest = cron("0 0 1 1 *", tz="Europe/Paris").latest_until(time.time() - 60)
            assert ran["scheduled_at"] == datetime.fromtimestamp(latest, timezone.utc).isoformat()
            assert ran["scheduled_at"].endswith("T23:00:00+00:00"), "midnight in Paris is 23:00 UTC in winter"
            harness.wait_for(
                lambda: state.moment(state.read(store, "scheduling_jobs.new_year") or "0") == latest,
                30,
                "the skipped job's missed runs were never decided",
            )
            harness.stop_schedulers()
            assert not harness.events("outcome:scheduled", "new_year"), "missed='skip' fired a missed run"
            assert len(harness.events("outcome:scheduled", "new_year_catch_up")) == 1
        finally:
            store.close()


@pytest.mark.parametrize("combination", ["dramatiq-redis", "celery-redis"])
def test_workers_started_with_the_scheduler_fire_each_run_once(tmp_path: Path, combination: str) -> None:
    with open_harness(combination, tmp_path, "scheduling_jobs") as harness:
        harness.start_workers(count=2, args=["--with-scheduler"], env={"TASKBRIDGE_SCHEDULER_LEASE": "2"})
        harness.wait_for(lambda: len(harness.events("ran", "tick")) >= 3, 60, "the periodic job did not run 3 times")
        harness.stop_workers(grace=20.0)
        fired = _seconds(harness.events("outcome:scheduled", "tick"))
        assert len(fired) == len(set(fired)), "two workers fired the same run"
        store = _store(harness)
        try:
            assert store.lock_ttl(LEASE_KEY) is None, "a worker stopped with SIGTERM kept the lease"
        finally:
            store.close()


def test_a_scheduler_started_beside_a_worker_stops_when_the_worker_is_killed(tmp_path: Path) -> None:
    with open_harness("celery-redis", tmp_path, "scheduling_jobs") as harness:
        harness.start_workers(args=["--with-scheduler"], env={"TASKBRIDGE_SCHEDULER_LEASE": "2"})
        harness.wait_for(lambda: len(harness.events("outcome:scheduled", "tick")) >= 2, 60, "the job was not fired")
        os.kill(harness.workers[0].pid, signal.SIGKILL)  # the worker's main process only
        time.sleep(6.0)  # the scheduler notices within a second or two
        fired = len(harness.events("outcome:scheduled", "tick"))
        time.sleep(4.0)
        assert len(harness.events("outcome:scheduled", "tick")) == fired, "the scheduler outlived its worker"
