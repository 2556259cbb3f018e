"""Running the scheduler as ``taskbridge scheduler MODULE`` or beside a worker (``--with-scheduler``)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterable, Iterator, Sequence
from types import FrameType

from ..config import Settings, banner, get_settings
from ..errors import ConfigurationError
from ..job import Job, registry
from .scheduler import Scheduler, periodic_jobs

log = logging.getLogger("taskbridge.scheduler")


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
    with stopped_by_signals(scheduler):
        scheduler.run()


@contextlib.contextmanager
def stopped_by_signals(scheduler: Scheduler) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT stop ``scheduler`` (which then gives its lease up)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("scheduler: %s received, stopping", signal.Signals(signum).name)
        scheduler.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
