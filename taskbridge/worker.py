"""Worker bootstrap: import the job modules, build the engine and runner, declare jobs, run."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import preflight
from .config import Settings, banner, get_settings
from .engine import Engine, get_engine, load_engine_factory
from .errors import ConfigurationError
from .job import Job, registry
from .layout import dead_letter_queue
from .outage import broker_outage
from .runner import Runner
from .stranded import warn_about_stranded

if TYPE_CHECKING:
    from .observability.server import MetricsServer
    from .scheduling.scheduler import Scheduler
    from .scheduling.service import SchedulerProcess

log = logging.getLogger("taskbridge.worker")


def import_job_modules(modules: Sequence[str]) -> None:
    """Import each module so its ``@job`` declarations register; errors name the module."""
    if "" not in sys.path:
        sys.path.insert(0, "")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import job module {module!r}: {exc}") from exc


def jobs_of(module: str) -> list[str]:
    """Names of the jobs an imported ``module`` declares or holds (imported from elsewhere)."""
    held = {value.name for value in vars(sys.modules[module]).values() if isinstance(value, Job)}
    declared = {name for name in registry() if name.startswith(module + ".")}
    return sorted(held | declared)


def check_modules_and_queues(
    modules: Sequence[str], queues: Sequence[str], default_queue: str, *, any_queue: bool = False
) -> list[str]:
    """The queues to consume: refuses (ConfigurationError) a module with no job, or queues no job
    declares, unless ``any_queue`` (jobs routed there per call with ``.options(queue=...)``)."""
    empty = [module for module in modules if not jobs_of(module)]
    if empty:
        raise ConfigurationError(
            f"no @job in {', '.join(empty)}: a worker needs the module(s) that declare the jobs it runs"
        )
    names = {name for module in modules for name in jobs_of(module)}
    used = sorted({registry()[name].spec.resolved_queue(default_queue) for name in names if name in registry()})
    if not queues:
        return used
    unused = [queue for queue in queues if queue not in used]
    if len(unused) == len(queues) and not any_queue:
        raise ConfigurationError(
            f"no job of {', '.join(modules)} uses queue(s) {', '.join(queues)} (--queues); "
            f"their queues are: {', '.join(used)} (--any-queue if you route jobs there with .options(queue=...))"
        )
    if unused and not any_queue:
        log.warning("no job of %s uses queue(s) %s; consuming them anyway", ", ".join(modules), ", ".join(unused))
    return list(queues)


def prepare(engine: Engine | None = None) -> Runner:
    """Declare every registered job on the engine, after checking the coordination store fits it."""
    init_process()
    engine = engine or get_engine()
    runner = Runner(engine, get_settings())
    specs = [handle.spec for handle in registry().values()]
    runner.check_jobs(specs)
    for spec in specs:
        engine.declare(spec, runner)
    return runner


def init_process() -> None:
    """Turn on metrics and error reporting in a process that runs jobs, as the worker configured them.

    Engines that fork their worker processes from the prepared worker (Celery prefork, the
    Dramatiq adapter's supervisor) need not call it: a forked process inherits both. An engine
    that starts processes another way (spawn, exec) calls it first thing in each new process.
    Calling it again is harmless.
    """
    from .observability import error_reporting, metrics, multiprocess

    if os.environ.get(multiprocess.ACTIVE_ENV) and multiprocess.configured_directory():
        metrics.install()
    error_reporting.install()


def process_exited(pid: int) -> None:
    """An engine's supervisor calls this in the worker's main process when a worker process exits
    (recycled, crashed, killed): its metric values are taken into the totals at once. Optional:
    exited processes are also found on each scrape."""
    from .observability import multiprocess

    multiprocess.process_exited(pid)


def run_worker(
    modules: Sequence[str],
    queues: Sequence[str],
    concurrency: int | None,
    *,
    any_queue: bool = False,
    with_scheduler: bool = False,
) -> None:
    """Import the job modules and run the configured engine's worker in the foreground;
    ``with_scheduler`` also fires the modules' periodic jobs (see :mod:`taskbridge.scheduling`):
    from a process of its own beside an engine that forks job processes, else from a thread; the
    lease is given up when the worker stops.

    With ``metrics_port`` set, ``/metrics`` is served for every process the engine runs jobs in
    (prometheus-client multiprocess mode, set up before anything else), from a process of its own
    when the engine forks job processes.
    """
    from .observability.logging import install_password_masking

    install_password_masking()
    settings = get_settings()
    directory: Path | None = None
    owns_directory = False
    if settings.metrics_port is not None:
        from .observability import metrics, multiprocess

        owns_directory = not multiprocess.configured_directory()
        directory = multiprocess.use_directory()
        os.environ[multiprocess.ACTIVE_ENV] = "1"
        metrics.install()  # before the job modules, whose import may enqueue
    server = None
    scheduler: Scheduler | SchedulerProcess | None = None
    try:
        import_job_modules(modules)
        queues = check_modules_and_queues(modules, queues, settings.default_queue, any_queue=any_queue)
        engine = get_engine()
        wait_for_broker(settings, engine)
        preflight.check_coordination(settings)
        prepare(engine)
        if settings.metrics_port is not None:
            server = _serve_metrics(settings, engine, list(queues), directory, owns_directory)
        log.info(
            "taskbridge worker: %s queues=%s jobs=%d%s",
            banner(settings),
            ",".join(queues),
            len(registry()),
            f" metrics=:{server.port}/metrics" if server is not None else "",
        )
        warn_about_stranded(engine, settings, list(queues), modules)
        if with_scheduler:
            from .scheduling.service import SchedulerProcess, build_scheduler, jobs_in

            if engine.facts.multi_process:
                scheduler = SchedulerProcess(modules, settings)
            else:
                in_thread = build_scheduler(jobs_in(modules), settings)
                in_thread.start()
                scheduler = in_thread
        engine.work(list(queues), concurrency or settings.worker_concurrency)
    finally:
        if scheduler is not None:
            scheduler.stop()
        if server is not None:
            server.stop()
        elif owns_directory and directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def wait_for_broker(settings: Settings, engine: Engine) -> None:
    """Return once the broker answers. A worker started before its broker (a deploy, a machine
    booting, a broker restarting) waits for it as Celery's and Dramatiq's own workers do: the outage
    is logged once, with reminders, and the worker goes on when the broker is up. A refused login,
    or a broker still unreachable after ``broker_start_wait``, raises
    :class:`~taskbridge.preflight.ServerUnavailable`."""
    outage = broker_outage()
    started = time.monotonic()
    while True:
        try:
            preflight.check_broker(settings, engine)
        except preflight.ServerUnavailable as exc:
            limit = settings.broker_start_wait
            if exc.lasting or (limit is not None and time.monotonic() - started >= limit):
                raise
            wait = outage.failed(str(exc).split(": ", 1)[-1])
            if limit is not None:
                wait = min(wait, max(0.0, started + limit - time.monotonic()))
            time.sleep(wait)
        else:
            outage.succeeded()
            return


def _serve_metrics(
    settings: Settings, engine: Engine, queues: list[str], directory: Path | None, owns_directory: bool
) -> MetricsServer:
    from .observability.depth import QueueDepthCollector
    from .observability.server import serve, serve_from_own_process

    assert settings.metrics_port is not None
    depth, done = _depth_reader(engine, settings)
    collector = QueueDepthCollector(queues, depth, lambda q: dead_letter_queue(q, settings), done=done)
    if engine.facts.multi_process and directory is not None:
        # No scrape thread in a process the engine forks job processes from.
        return serve_from_own_process(
            settings.metrics_port, directory=directory, owns_directory=owns_directory, depth=collector
        )
    return serve(settings.metrics_port, directory=directory, owns_directory=owns_directory, depth=collector)


def _depth_reader(engine: Engine, settings: Settings) -> tuple[Callable[[str], int], Callable[[], None] | None]:
    """Queue depths for the metrics thread, and what to call after each scrape.

    The embedded engine's queues live in this process, so it is asked directly. A multi-process
    engine's queues live on the broker: each scrape opens a client engine of its own and closes
    it, so the metrics thread never touches the connections the worker consumes on, and no
    connection of it is open (and inherited) when the engine forks a new worker process.
    """
    if not engine.facts.multi_process:
        return engine.depth, None
    client: list[Engine] = []

    def depth(queue: str) -> int:
        if not client:
            client.append(load_engine_factory(settings.engine)(settings))
        return client[0].depth(queue)

    def done() -> None:
        while client:
            client.pop().close()

    return depth, done
