"""Periodic jobs: ``@job(schedule="*/5 * * * *")`` or ``schedule=every("30s")``, fired by
``taskbridge scheduler MODULE`` (or ``taskbridge worker MODULE --with-scheduler``).

Schedulers elect one leader through a lease in the coordination store; the leader enqueues each
run once, as an ordinary job whose envelope header ``scheduled_at`` (and, if the function declares
it, the ``scheduled_at`` argument) holds the run's scheduled time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import Missed, Periodic
from .schedules import Cron, Every, Schedule, cron, every

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .service import start_scheduler

__all__ = ["Cron", "Every", "Missed", "Periodic", "Schedule", "Scheduler", "cron", "every", "start_scheduler"]


def __getattr__(name: str) -> Any:
    # The scheduler needs the job registry, and job.py needs this package's options: import it on use.
    if name == "Scheduler":
        from .scheduler import Scheduler

        return Scheduler
    if name == "start_scheduler":
        from .service import start_scheduler

        return start_scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
