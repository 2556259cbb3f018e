"""``taskbridge status``: queues with depth, dead letters, jobs/s, failed/s, wait and running."""

from __future__ import annotations

import sys

import click

from .support import configure, fail, log_level_option, set_log_level


@click.command()
@click.argument("modules", nargs=-1)
@click.option("--queues", "-Q", default="", help="comma-separated queues (default: the queues of the jobs in MODULES)")
@click.option("--once", is_flag=True, help="print one snapshot and exit")
@click.option("--json", "json_output", is_flag=True, help="print one snapshot as JSON and exit")
@click.option(
    "--metrics",
    "metrics_urls",
    multiple=True,
    help="a worker's /metrics URL, for jobs/s and wait (repeat or comma-separate; default: "
    "http://127.0.0.1:<metrics_port>/metrics when the metrics_port setting is set)",
)
@click.option("--interval", type=float, default=2.0, show_default=True, help="seconds between refreshes")
@click.option("--window", type=float, default=60.0, show_default=True, help="seconds of history for rates and wait")
@log_level_option()
def status(
    modules: tuple[str, ...],
    queues: str,
    once: bool,
    json_output: bool,
    metrics_urls: tuple[str, ...],
    interval: float,
    window: float,
    log_level: str | None,
) -> None:
    """Show queues: depth, dead letters, jobs/s, failed/s, p50/p95 wait, running (live; --once, --json)."""
    from .. import preflight
    from ..config import get_settings
    from ..engine import get_engine
    from ..job import registry
    from ..status import run_status
    from ..worker import import_job_modules

    set_log_level(log_level)
    try:
        configure()
        settings = get_settings()
        preflight.check_broker(settings, get_engine())
        names = [q for q in queues.split(",") if q]
        if not names and modules:
            import_job_modules(list(modules))
            names = sorted({h.spec.resolved_queue(settings.default_queue) for h in registry().values()})
        if not names:
            raise click.UsageError("name the queues with --queues, or give job modules: taskbridge status myapp.jobs")
        urls = [u for item in metrics_urls for u in item.split(",") if u]
        if not urls and settings.metrics_port is not None:
            urls = [f"http://127.0.0.1:{settings.metrics_port}/metrics"]
        code = run_status(
            get_engine(), settings, names, urls, once=once, json_output=json_output, interval=interval, window=window
        )
    except Exception as exc:
        fail(exc)
    sys.exit(code)
