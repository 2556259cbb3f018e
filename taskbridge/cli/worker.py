"""``taskbridge worker MODULES``: run the jobs MODULES declare on the configured engine."""

from __future__ import annotations

import click

from .support import configure, fail, log_level_option, set_log_level


@click.command()
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
    from ..worker import run_worker

    set_log_level(log_level)
    try:
        configure(
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
