"""Periodic jobs: schedules and time zones, the options of @job, and what the scheduler fires."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from support import TESTS_DIR, Embedded, EmbeddedFactory

from taskbridge import JobDefinitionError, cron, every, job
from taskbridge.cli import main
from taskbridge.coordination import Coordination, MemoryCoordination, RedisCoordination
from taskbridge.scheduling import Scheduler, start_scheduler, state
from taskbridge.scheduling.firing import SCHEDULED_HEADER

PARIS = ZoneInfo("Europe/Paris")


def _paris(*fields: int) -> float:
    return datetime(*fields, tzinfo=PARIS).timestamp()  # type: ignore[arg-type, misc]


def _utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat()


@job(name="tests.scheduling.new_year", schedule="0 0 1 1 *", schedule_tz="Europe/Paris")
def new_year() -> None:
    """Skips what it missed (the default)."""


@job(name="tests.scheduling.new_year_catch_up", schedule=cron("0 0 1 1 *", tz="Europe/Paris"), missed="catch_up_once")
def new_year_catch_up(scheduled_at: str) -> None:
    """Catches up once on what it missed."""


@job(name="tests.scheduling.each_minute", schedule=every(minutes=1))
def each_minute() -> None:
    """Every minute, on the minute."""


# -- schedules and time zones --------------------------------------------------------------


def test_cron_runs_at_the_local_time_of_its_zone_in_winter_and_in_summer() -> None:
    nine = cron("0 9 * * *", tz="Europe/Paris")
    assert _utc(nine.next_after(_paris(2026, 1, 15, 12))) == "2026-01-16T08:00:00+00:00"
    assert _utc(nine.next_after(_paris(2026, 7, 15, 12))) == "2026-07-16T07:00:00+00:00"
    assert _utc(cron("0 9 * * *").next_after(_paris(2026, 7, 15, 12))) == "2026-07-16T09:00:00+00:00", "UTC default"


def test_a_local_time_skipped_by_the_spring_change_runs_right_after_it_once() -> None:
    half_two = cron("30 2 * * *", tz="Europe/Paris")
    first = half_two.next_after(_paris(2026, 3, 28, 12))
    assert datetime.fromtimestamp(first, PARIS).isoformat() == "2026-03-29T03:00:00+02:00"
    second = half_two.next_after(first)
    assert datetime.fromtimestamp(second, PARIS).isoformat() == "2026-03-30T02:30:00+02:00"


def test_a_local_time_repeated_by_the_autumn_change_runs_once() -> None:
    half_two = cron("30 2 * * *", tz="Europe/Paris")
    first = half_two.next_after(_paris(2026, 10, 24, 12))
    assert datetime.fromtimestamp(first, PARIS).isoformat() == "2026-10-25T02:30:00+02:00"
    second = half_two.next_after(first)
    assert datetime.fromtimestamp(second, PARIS).isoformat() == "2026-10-26T02:30:00+01:00"
    assert half_two.latest_until(second) == second and half_two.latest_until(second - 1) == first


def test_every_counts_from_the_epoch_so_all_schedulers_agree() -> None:
    half_minute = every("30s")
    assert half_minute.next_after(1_000_000_000.5) == 1_000_000_020.0
    assert half_minute.latest_until(1_000_000_020.0) == 1_000_000_020.0
    assert half_minute.latest_until(1_000_000_019.9) == 1_000_000_000.0 - 10
    assert every(minutes=5) == every("5m") == every(300)


# -- options of @job -----------------------------------------------------------------------


def _declare(**options: Any) -> None:
    def some_job() -> None:
        """A job declared for one test."""

    job(name="tests.scheduling.bad", **options)(some_job)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule": "*/5 * * *"}, r"bad': option schedule=: cron expression '\*/5 \* \* \*' must have five"),
        ({"schedule": "61 * * * *"}, r"option schedule=: cron expression '61 \* \* \* \*' is not valid"),
        ({"schedule": "0 9 * * *", "schedule_tz": "Europe/Pariss"}, r"option schedule_tz=: unknown time zone"),
        ({"schedule": every("30s"), "schedule_tz": "Europe/Paris"}, r"schedule_tz= applies to cron schedules"),
        ({"schedule": cron("0 9 * * *", tz="UTC"), "schedule_tz": "Europe/Paris"}, r"contradicts the schedule's tz"),
        ({"schedule": every("30s"), "missed": "all"}, r"option missed= must be 'skip' or 'catch_up_once'"),
        ({"missed": "catch_up_once"}, r"option missed= needs schedule= as well"),
        ({"schedule_tz": "Europe/Paris"}, r"option schedule_tz= needs schedule= as well"),
        ({"schedule": 30}, r"option schedule= must be a cron string"),
    ],
)
@pytest.mark.usefixtures("job_registry")
def test_a_wrong_schedule_option_fails_at_decoration_naming_the_job_and_option(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(JobDefinitionError, match=r"job 'tests\.scheduling\.bad': .*" + message.split(": ", 1)[-1]):
        _declare(**options)


def test_every_needs_at_least_a_second() -> None:
    with pytest.raises(ValueError, match="at least one second"):
        every("500ms")


@pytest.mark.usefixtures("job_registry")
def test_a_periodic_job_must_be_callable_without_arguments() -> None:
    def needs_an_id(account_id: int) -> None:
        """Cannot be fired with no arguments."""

    with pytest.raises(JobDefinitionError, match=r"job 'tests\.scheduling\.needs_id': option schedule= needs a fun"):
        job(name="tests.scheduling.needs_id", schedule=every("1m"))(needs_an_id)


# -- what the scheduler fires, on either store ----------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, embedded: Embedded) -> Iterator[Coordination]:
    if request.param == "memory":
        yield embedded.coordination
        return
    redis_store = RedisCoordination(request.getfixturevalue("redis_url"), request.getfixturevalue("namespace"))
    try:
        yield redis_store
    finally:
        redis_store.close()


def _fired(embedded: Embedded, name: str) -> list[str]:
    envelopes = embedded.queued(embedded.settings.default_queue)
    return [e.headers[SCHEDULED_HEADER] for e in envelopes if e.job == name]


def _new_year_before(moment: float) -> float:
    return cron("0 0 1 1 *", tz="Europe/Paris").latest_until(moment)


def test_after_a_downtime_catch_up_once_fires_one_run_and_skip_fires_none(
    embedded: Embedded, store: Coordination
) -> None:
    long_ago = _paris(2020, 1, 1)
    for handle in (new_year, new_year_catch_up):
        state.advance(store, handle.name, None, long_ago)
    scheduler = Scheduler([new_year, new_year_catch_up], store, lease=10, grace=60)
    scheduler.step()
    scheduler.step()
    latest = _new_year_before(time.time() - 60)
    assert _fired(embedded, new_year_catch_up.name) == [_utc(latest)], "one run, carrying the latest missed time"
    [envelope] = [e for e in embedded.queued(embedded.settings.default_queue) if e.job == new_year_catch_up.name]
    assert envelope.kwargs == {"scheduled_at": _utc(latest)}
    assert _fired(embedded, new_year.name) == []
    current = state.read(store, new_year.name)
    assert current is not None and state.moment(current) == latest, "the skipped runs are decided, not pending"


def test_a_new_periodic_job_starts_with_its_next_run_not_with_the_past(embedded: Embedded, store: Coordination) -> None:
    scheduler = Scheduler([new_year_catch_up], store, lease=10)
    scheduler.step()
    assert _fired(embedded, new_year_catch_up.name) == []
    assert state.read(store, new_year_catch_up.name) is not None


def test_runs_late_by_less_than_the_grace_each_fire_once_in_order(embedded: Embedded, store: Coordination) -> None:
    three_ago = each_minute.spec.periodic.schedule.latest_until(time.time()) - 180  # type: ignore[union-attr]
    state.advance(store, each_minute.name, None, three_ago)
    scheduler = Scheduler([each_minute], store, lease=10, grace=600)
    scheduler.step()
    scheduler.step()
    fired = [datetime.fromisoformat(t).timestamp() for t in _fired(embedded, each_minute.name)]
    assert len(fired) >= 3 and fired == [three_ago + 60 * (i + 1) for i in range(len(fired))]


def test_two_schedulers_on_one_store_have_one_leader_and_a_released_lease_passes_on(
    embedded: Embedded, store: Coordination
) -> None:
    state.advance(store, new_year_catch_up.name, None, _paris(2020, 1, 1))
    first = Scheduler([new_year_catch_up], store, lease=10)
    second = Scheduler([new_year_catch_up], store, lease=10)
    first.step()
    second.step()
    assert first.leading and not second.leading
    assert len(_fired(embedded, new_year_catch_up.name)) == 1
    first.lease.release()
    third = Scheduler([new_year_catch_up], store, lease=10)
    third.step()
    assert third.leading
    assert len(_fired(embedded, new_year_catch_up.name)) == 1, "the new leader sees the run as decided"


def test_a_run_whose_enqueue_fails_is_fired_on_the_next_pass(
    embedded: Embedded, store: Coordination, monkeypatch: pytest.MonkeyPatch
) -> None:
    state.advance(store, new_year_catch_up.name, None, _paris(2020, 1, 1))
    scheduler = Scheduler([new_year_catch_up], store, lease=10)
    publish = embedded.engine.publish

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("broker down")

    monkeypatch.setattr(embedded.engine, "publish", refuse)
    scheduler.step()
    assert _fired(embedded, new_year_catch_up.name) == []
    monkeypatch.setattr(embedded.engine, "publish", publish)
    scheduler._next_due.clear()  # skip the pause after a failure
    scheduler.step()
    assert _fired(embedded, new_year_catch_up.name) == [_utc(_new_year_before(time.time() - 60))]


# -- the embedded engine and the command ---------------------------------------------------

_ticks: list[str] = []
_ticked = threading.Event()


@job(name="tests.scheduling.embedded_tick", schedule=every("1s"))
def embedded_tick(scheduled_at: str) -> None:
    """Records each run's time in this process."""
    _ticks.append(scheduled_at)
    if len(_ticks) >= 2:
        _ticked.set()


def test_the_embedded_engine_runs_periodic_jobs_from_a_thread_of_the_process(make_embedded: EmbeddedFactory) -> None:
    embedded = make_embedded()
    embedded.engine.start()
    scheduler = start_scheduler()
    try:
        assert _ticked.wait(30), "the every-second job did not run twice"
    finally:
        scheduler.stop()
        embedded.engine.stop()
    assert len(set(_ticks)) == len(_ticks)
    assert not scheduler.leading, "a stopped scheduler gives its lease up"
    assert isinstance(embedded.coordination, MemoryCoordination)
    assert embedded.coordination.lock_ttl("scheduler:leader") is None


def test_the_scheduler_command_on_the_embedded_engine_says_what_to_run_instead(clean_env: None) -> None:
    result = CliRunner().invoke(main, ["scheduler", "taskbridge.testing.jobs"])
    assert result.exit_code != 0
    assert "taskbridge worker MODULE --with-scheduler" in result.output


def test_the_scheduler_command_refuses_a_module_without_periodic_jobs(clean_env: None) -> None:
    result = CliRunner().invoke(main, ["scheduler", "taskbridge.demo"])
    assert result.exit_code != 0
    assert "no periodic job in taskbridge.demo" in result.output


def test_the_example_runs(tmp_path: Path) -> None:
    script = TESTS_DIR.parent / "examples" / "periodic.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "heartbeat for " in done.stdout
