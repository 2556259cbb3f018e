"""The migration guide's "after" examples run as the guide says: on the embedded engine, and on a
real broker with the engine the team came from (Celery on Redis, Dramatiq on Redis)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import Embedded, open_harness

from taskbridge.job import Job

AFTER = Path(__file__).parent.parent / "migration_guide" / "examples" / "after"
DAY = "2026-11-30"


@pytest.fixture
def load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, job_registry: Mapping[str, Job[..., Any]]
) -> Iterator[Callable[[str], ModuleType]]:
    """Import an "after" example with its output folders in ``tmp_path``; the module and its jobs
    (declared in the test's ``job_registry``) are forgotten afterwards."""
    monkeypatch.setenv("REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("PYTHONPATH", str(AFTER))
    monkeypatch.syspath_prepend(str(AFTER))
    loaded: list[str] = []

    def load_module(name: str) -> ModuleType:
        loaded.append(name)
        return importlib.import_module(name)

    yield load_module
    for name in loaded:
        sys.modules.pop(name, None)


def wait_for_files(folder: Path, names: set[str], timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while time.monotonic() < deadline:
        found = {p.name for p in folder.glob("*")} if folder.exists() else set()
        if names <= found:
            break
        time.sleep(0.1)
    return found


REPORTS = {f"1-{DAY}.txt", f"2-{DAY}.txt", f"0-{DAY}.txt", f"archived-{DAY}"}


def test_reports_after_celery_runs_on_the_embedded_engine(
    embedded: Embedded, load: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    reports = load("reports_celery")
    reports.send_daily(DAY, [1, 2])
    embedded.engine.start(["reports"], 2)
    try:
        assert wait_for_files(tmp_path / "reports", REPORTS, 10) == REPORTS
    finally:
        embedded.engine.stop()


def test_reports_after_celery_runs_on_celery_with_redis(load: Callable[[str], ModuleType], tmp_path: Path) -> None:
    with open_harness("celery-redis", tmp_path, "reports_celery") as run:
        reports = load("reports_celery")
        run.start_workers(queues=["reports"])
        reports.send_daily(DAY, [1, 2])
        assert wait_for_files(tmp_path / "reports", REPORTS, 60) == REPORTS, run.worker_logs(40)


NOTIFICATIONS = {"mail-5.txt", "push-phone-1.txt"}


def test_notify_after_dramatiq_runs_on_the_embedded_engine(
    embedded: Embedded, load: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    notify = load("notify_dramatiq")
    notify.welcome(5, "phone-1")
    embedded.engine.start(["mail", "default"], 2)
    try:
        assert wait_for_files(tmp_path / "outbox", NOTIFICATIONS, 15) == NOTIFICATIONS
    finally:
        embedded.engine.stop()
    assert (tmp_path / "outbox" / "push-phone-1.txt").read_text() == "Hello"


def test_notify_after_dramatiq_runs_on_dramatiq_with_redis(load: Callable[[str], ModuleType], tmp_path: Path) -> None:
    with open_harness("dramatiq-redis", tmp_path, "notify_dramatiq") as run:
        notify = load("notify_dramatiq")
        run.start_workers(queues=[run.queue, "mail"])
        notify.welcome(5, "phone-1")
        assert wait_for_files(tmp_path / "outbox", NOTIFICATIONS, 60) == NOTIFICATIONS, run.worker_logs(40)
