"""Worker bootstrap: import the job modules, build the engine and runner, declare jobs, run."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from .config import get_settings, mask_url
from .engine import Engine, get_engine
from .errors import ConfigurationError
from .job import registry
from .runner import Runner

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


def prepare(engine: Engine | None = None) -> Runner:
    """Declare every registered job on the engine, after checking the coordination store fits it."""
    engine = engine or get_engine()
    runner = Runner(engine, get_settings())
    specs = [handle.spec for handle in registry().values()]
    runner.check_jobs(specs)
    for spec in specs:
        engine.declare(spec, runner.run)
    return runner


def run_worker(modules: Sequence[str], queues: Sequence[str], concurrency: int | None) -> None:
    """Import the job modules and run the configured engine's worker in the foreground."""
    import_job_modules(modules)
    settings = get_settings()
    engine = get_engine()
    prepare(engine)
    if not queues:
        queues = sorted({h.spec.resolved_queue(settings.default_queue) for h in registry().values()})
    log.info(
        "taskbridge worker: engine=%s broker=%s coordination=%s queues=%s jobs=%d",
        engine.name,
        mask_url(settings.broker_url),
        mask_url(settings.effective_coordination_url),
        ",".join(queues),
        len(registry()),
    )
    engine.work(list(queues), concurrency or settings.worker_concurrency)
