"""The ``taskbridge`` command: worker, enqueue, status, config, contract, demo, move, dead."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import click

from . import __version__
from .cli_fanout import fanout
from .cli_support import fail, log_level_option, set_log_level
from .config import load_settings, set_settings
from .job_command import job_command
from .migrate.command import migrate


def _configure(**overrides: Any) -> None:
    """Apply command-line overrides on top of the environment and files."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    set_settings(load_settings(**overrides))


@click.group()
@click.version_option(__version__, "--version", prog_name="taskbridge", message="%(prog)s %(version)s")
@log_level_option(default="INFO")
def main(log_level: str) -> None:
    """taskbridge: one @job API over Celery, Dramatiq and the embedded engine."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    set_log_level(log_level)


@main.command()
@log_level_option()
@click.argument("modules", nargs=-1, required=True)
@click.option("--queues", "-Q", default="", help="comma-separated queues to consume (default: every job's queue)")
@click.option("--concurrency", "-c", type=int, default=None, help="parallel jobs (Celery: prefork children)")
@click.option("--processes", "-p", type=int, default=None, help="Dramatiq: worker processes")
@click.option("--threads", "-t", type=int, default=None, help="Dramatiq: threads per process")
@click.option("--reload", is_flag=True, default=None, help="restart when code changes (development)")
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
@click.option(
    "--any-queue", is_flag=True, help="consume --queues that no job declares (jobs routed there with .options(queue=))"
)
@click.option("--with-scheduler", is_flag=True, help="also fire the periodic jobs of MODULES (small deployments)")
def worker(
    modules: tuple[str, ...],
    queues: str,
    concurrency: int | None,
    processes: int | None,
    threads: int | None,
    reload: bool | None,
    metrics_port: int | None,
    any_queue: bool,
    with_scheduler: bool,
    log_level: str | None,
) -> None:
    """Run a worker for the jobs declared in MODULES on the configured engine."""
    from .worker import run_worker

    set_log_level(log_level)
    try:
        _configure(
            worker_concurrency=concurrency,
            worker_processes=processes,
            worker_threads=threads,
            worker_reload=reload,
            metrics_port=metrics_port,
        )
        run_worker(
            list(modules),
            [q for q in queues.split(",") if q],
            concurrency,
            any_queue=any_queue,
            with_scheduler=with_scheduler,
        )
    except Exception as exc:
        fail(exc)


@main.command()
@log_level_option()
@click.argument("modules", nargs=-1, required=True)
@click.option("--lease", default=None, help="leader lease, e.g. 15s: the longest failover when the leader dies")
@click.option("--grace", default=None, help="how late a run may fire and still count as on time, e.g. 60s")
def scheduler(modules: tuple[str, ...], lease: str | None, grace: str | None, log_level: str | None) -> None:
    """Enqueue the periodic jobs declared in MODULES as they fall due (run two or more for failover)."""
    from .scheduling.service import run_scheduler

    set_log_level(log_level)
    try:
        _configure(scheduler_lease=lease, scheduler_grace=grace)
        run_scheduler(list(modules))
    except Exception as exc:
        fail(exc)


def _finish_embedded() -> None:
    """The embedded engine runs jobs inside this process: wait for them instead of losing them at exit."""
    from .engine import get_engine
    from .memory import MemoryEngine

    engine = get_engine()
    if isinstance(engine, MemoryEngine):
        click.echo("embedded engine (no TASKBRIDGE_ENGINE set): running the job in this process", err=True)
        engine.drain_at_exit()


@main.command()
@click.argument("job_name")
@click.argument("arguments", default="[]")
@click.option("--countdown", default=None, help="run after this delay, e.g. 30s, 2h")
@click.option("--queue", default=None, help="send to this queue instead of the job's own")
@click.option(
    "--many",
    type=click.File("r"),
    default=None,
    help="enqueue one run per line of this file ('-': stdin), each a JSON list (args) or object (kwargs)",
)
@log_level_option()
def enqueue(
    job_name: str,
    arguments: str,
    countdown: str | None,
    queue: str | None,
    many: TextIO | None,
    log_level: str | None,
) -> None:
    """Enqueue JOB_NAME (module.function) with ARGUMENTS as a JSON list (args) or object (kwargs).

    With --many, one run per line of a JSON-lines file, in batches, with a progress bar."""
    from . import preflight
    from .cli_support import unknown_job_message
    from .config import get_settings
    from .engine import get_engine
    from .job import lookup
    from .worker import import_job_modules

    set_log_level(log_level)
    try:
        _configure()
        if lookup(job_name) is None and "." in job_name:
            import_job_modules([job_name.rsplit(".", 1)[0]])
        handle = lookup(job_name)
        if handle is None:
            raise click.BadParameter(unknown_job_message(job_name), param_hint="JOB_NAME")
        preflight.check_broker(get_settings(), get_engine())
        call = handle.options(countdown=countdown, queue=queue)
        if many is not None:
            from .cli_support import enqueue_lines

            click.echo(f"{enqueue_lines(call, many)} enqueued")
            _finish_embedded()
            return
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="ARGUMENTS") from None
        if isinstance(parsed, dict):
            args, kwargs = [], parsed
        elif isinstance(parsed, list):
            args, kwargs = parsed, {}
        else:
            raise click.BadParameter("must be a JSON list or object", param_hint="ARGUMENTS")
        envelope = call.enqueue(*args, **kwargs)
        click.echo(envelope.id if envelope is not None else "duplicate: not enqueued")
        _finish_embedded()
    except Exception as exc:
        fail(exc)


@main.command()
@log_level_option()
def demo(log_level: str | None) -> None:
    """Run example jobs using every option on the embedded engine and show what happened."""
    from .demo import run_demo

    set_log_level(log_level)
    sys.exit(run_demo())


@main.command()
@click.option("--engine", default=None, help="engine to test (default: TASKBRIDGE_ENGINE)")
@click.option("--broker", default=None, help="broker URL (default: TASKBRIDGE_BROKER_URL)")
@click.option("--coordination", default=None, help="redis:// URL workers share (default: TASKBRIDGE_COORDINATION_URL)")
@click.option("-k", "keyword", default=None, help="only cases matching this pytest expression")
@log_level_option()
def contract(
    engine: str | None, broker: str | None, coordination: str | None, keyword: str | None, log_level: str | None
) -> None:
    """Run the contract suite on one engine x transport; exits non-zero if any case fails."""
    from .cli_support import require_contract_extra

    set_log_level(log_level)
    require_contract_extra()
    from .testing.report import run_contract

    sys.exit(run_contract(engine=engine, broker=broker, coordination=coordination, keyword=keyword))


@main.command()
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
    from . import preflight
    from .config import get_settings
    from .engine import get_engine
    from .job import registry
    from .status import run_status
    from .worker import import_job_modules

    set_log_level(log_level)
    try:
        _configure()
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


main.add_command(migrate)
main.add_command(job_command)
main.add_command(fanout)


@main.command("config")
@log_level_option()
def config_command(log_level: str | None) -> None:
    """Show the settings in force and where each comes from (environment, file, default)."""
    from .cli_support import describe_settings
    from .config import get_settings

    set_log_level(log_level)
    try:
        _configure()
        click.echo(describe_settings(get_settings()))
    except Exception as exc:
        fail(exc)


def _add_backlog_commands() -> None:
    from .cli_backlog import dead, move

    main.add_command(move)
    main.add_command(dead)


_add_backlog_commands()


if __name__ == "__main__":
    main()
