"""``taskbridge enqueue JOB_NAME ARGUMENTS``: enqueue one run, or one per line of a file with ``--many``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

import click

from .support import configure, fail, log_level_option, set_log_level

if TYPE_CHECKING:
    from ..job import JobCall


@click.command()
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
    from .. import preflight
    from ..config import get_settings
    from ..engine import get_engine
    from ..job import lookup
    from ..worker import import_job_modules

    set_log_level(log_level)
    try:
        configure()
        if lookup(job_name) is None and "." in job_name:
            import_job_modules([job_name.rsplit(".", 1)[0]])
        handle = lookup(job_name)
        if handle is None:
            raise click.BadParameter(unknown_job_message(job_name), param_hint="JOB_NAME")
        preflight.check_broker(get_settings(), get_engine())
        call = handle.options(countdown=countdown, queue=queue)
        if many is not None:
            click.echo(f"{enqueue_lines(call, many)} enqueued")
            finish_embedded()
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
        finish_embedded()
    except Exception as exc:
        fail(exc)


def finish_embedded() -> None:
    """The embedded engine runs jobs inside this process: wait for them instead of losing them at exit."""
    from ..engine import get_engine
    from ..memory import MemoryEngine

    engine = get_engine()
    if isinstance(engine, MemoryEngine):
        click.echo("embedded engine (no TASKBRIDGE_ENGINE set): running the job in this process", err=True)
        engine.drain_at_exit()


def unknown_job_message(job_name: str) -> str:
    """No job by that name: list the jobs its module declares, if it has any."""
    from ..job import registry

    module = job_name.rsplit(".", 1)[0] if "." in job_name else ""
    jobs = sorted(name for name in registry() if module and name.startswith(module + "."))
    if jobs:
        return f"no job named {job_name!r}; {module} declares: {', '.join(jobs)}"
    if module in sys.modules:
        return f"no job named {job_name!r}; module {module} declares no @job"
    return f"no job named {job_name!r}; use module.function"


def enqueue_lines(call: JobCall, lines: TextIO) -> int:
    """Enqueue one run per non-blank JSON line of ``lines`` with ``enqueue_many``, showing a progress
    bar on a terminal; returns how many were published."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total: int | None = None
    if lines.seekable():
        total = sum(1 for line in lines if line.strip())
        lines.seek(0)

    def items() -> Iterator[Any]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"line {number} is not JSON: {exc}", param_hint="--many") from None
            if not isinstance(item, dict | list):
                raise click.BadParameter(f"line {number} must be a JSON list or object", param_hint="--many")
            yield item

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(f"enqueue {call.job.name}", total=total)
        return call.enqueue_many(items(), progress=lambda done: bar.update(task, completed=done))
