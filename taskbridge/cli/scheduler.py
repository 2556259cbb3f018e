"""``taskbridge scheduler MODULES``: enqueue the periodic jobs MODULES declare as they fall due."""

from __future__ import annotations

import click

from .support import configure, fail, log_level_option, set_log_level


@click.command()
@log_level_option()
@click.argument("modules", nargs=-1, required=True)
@click.option("--lease", default=None, help="leader lease, e.g. 15s: the longest failover when the leader dies")
@click.option("--grace", default=None, help="how late a run may fire and still count as on time, e.g. 60s")
def scheduler(modules: tuple[str, ...], lease: str | None, grace: str | None, log_level: str | None) -> None:
    """Enqueue the periodic jobs declared in MODULES as they fall due (run two or more for failover)."""
    from ..scheduling.service import run_scheduler

    set_log_level(log_level)
    try:
        configure(scheduler_lease=lease, scheduler_grace=grace)
        run_scheduler(list(modules))
    except Exception as exc:
        fail(exc)
