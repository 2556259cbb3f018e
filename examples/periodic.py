"""Periodic jobs: python examples/periodic.py

Runs on the embedded engine with no configuration: the scheduler fires from a thread of this
process for a few seconds. With TASKBRIDGE_ENGINE, TASKBRIDGE_BROKER_URL and a shared
TASKBRIDGE_COORDINATION_URL set, run `taskbridge scheduler examples.periodic` (two of them for
failover) beside `taskbridge worker examples.periodic`, or `taskbridge worker examples.periodic
--with-scheduler` alone.
"""

from __future__ import annotations

import time

from taskbridge import every, get_engine, job
from taskbridge.scheduling import start_scheduler


@job(schedule=every("1s"))
def heartbeat(scheduled_at: str) -> None:
    """Every second; a ``scheduled_at`` parameter receives the run's time (ISO 8601, UTC)."""
    print(f"heartbeat for {scheduled_at}")


@job(schedule="0 9 * * mon-fri", schedule_tz="Europe/Paris", missed="catch_up_once")
def morning_report() -> None:
    """At 09:00 Paris time on weekdays, summer and winter; one catch-up run if a scheduler was down."""
    print("morning report")


if __name__ == "__main__":
    scheduler = start_scheduler()
    time.sleep(3.5)
    scheduler.stop()
    get_engine().join(timeout=10)
