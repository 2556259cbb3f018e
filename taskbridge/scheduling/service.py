"""Running the scheduler as ``taskbridge scheduler MODULE`` or beside a worker (``--with-scheduler``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence

from ..config import Settings, banner, get_settings
from ..errors import ConfigurationError
from ..job import Job, registry
from ..stop_signals import stopped_by_signals
from .scheduler import Scheduler, periodic_jobs

log = logging.getLogger("taskbridge.scheduler")

PARENT_ENV = "_TASKBRIDGE_SCHEDULER_PARENT"
"""Set for a scheduler started beside a worker: the worker's pid, whose exit stops the scheduler."""


def jobs_in(modules: Sequence[str]) -> list[Job[..., object]]:
    """The periodic jobs that the imported ``modules`` declare or hold."""
    from ..worker import jobs_of

    return periodic_jobs(registry()[name] for module in modules for name in jobs_of(module) if name in registry())


def build_scheduler(jobs: Iterable[Job[..., object]] | None = None, settings: Settings | None = None) -> Scheduler:
    """A scheduler for ``jobs`` (default: every periodic job declared in this process) on the
    process-wide store; a :class:`ConfigurationError` when the store is in-process but jobs run in
    other processes."""
    from ..coordination import get_coordination
    from ..engine import get_engine

    settings = settings or get_settings()
    coordination = get_coordination()
    if get_engine().facts.multi_process and not coordination.shared:
        raise ConfigurationError(
            "the scheduler needs a coordination store shared by every scheduler, so that each run fires once: "
            "set TASKBRIDGE_COORDINATION_URL to a redis:// URL"
        )
    return Scheduler(periodic_jobs(jobs), coordination, lease=settings.scheduler_lease, grace=settings.scheduler_grace)


def start_scheduler() -> Scheduler:
    """Fire the periodic jobs declared so far from a background thread of this process (the
    embedded engine's way; also fine beside a web app). ``.stop()`` ends it and gives the lease up."""
    scheduler = build_scheduler()
    scheduler.start()
    return scheduler


def run_scheduler(modules: Sequence[str]) -> None:
    """Import ``modules`` and fire their periodic jobs until SIGTERM or SIGINT, then give the lease up."""
    from .. import preflight
    from ..engine import get_engine
    from ..logging_setup import install_password_masking
    from ..worker import import_job_modules

    install_password_masking()
    settings = get_settings()
    import_job_modules(modules)
    jobs = jobs_in(modules)
    if not jobs:
        raise ConfigurationError(
            f"no periodic job in {', '.join(modules)}: declare one with @job(schedule='*/5 * * * *') "
            "or schedule=every('30s')"
        )
    if not get_engine().facts.multi_process:
        raise ConfigurationError(
            "the embedded engine runs jobs in the process that enqueues them: run "
            "`taskbridge worker MODULE --with-scheduler`, or set TASKBRIDGE_ENGINE and TASKBRIDGE_BROKER_URL"
        )
    preflight.check_broker(settings)
    preflight.check_coordination(settings)
    scheduler = build_scheduler(jobs, settings)
    log.info("taskbridge scheduler: %s", banner(settings))
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _stop_when_gone(scheduler, int(parent))
    with stopped_by_signals(scheduler.stop, "scheduler"):
        scheduler.run()


class SchedulerProcess:
    """``taskbridge scheduler MODULES`` run beside a worker whose engine forks job processes.

    A thread in the worker's main process would publish through the broker client while the engine
    forks, and a job process forked while the client held one of its locks would wait on it for ever
    (see :mod:`taskbridge.observability.server`); a process of its own holds nothing the worker forks.
    It stops with the worker, also when the worker is killed."""

    def __init__(self, modules: Sequence[str], settings: Settings) -> None:
        level = logging.getLevelName(logging.getLogger("taskbridge").getEffectiveLevel())
        env = {
            **os.environ,
            PARENT_ENV: str(os.getpid()),
            "TASKBRIDGE_SCHEDULER_LEASE": str(settings.scheduler_lease),
            "TASKBRIDGE_SCHEDULER_GRACE": str(settings.scheduler_grace),
        }
        command = [sys.executable, "-m", "taskbridge", "--log-level", str(level), "scheduler", *modules]
        self._process = subprocess.Popen(command, env=env)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scheduler (it gives its lease up) and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _stop_when_gone(scheduler: Scheduler, parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            if scheduler.wait_stopped(1.0):
                return
        log.info("scheduler: the worker it was started with has exited; stopping")
        scheduler.stop()

    threading.Thread(target=watch, name="taskbridge-scheduler-parent", daemon=True).start()
