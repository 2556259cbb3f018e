"""``taskbridge move``: a backlog (or its dead letters) from one engine x broker to another, a thin
click wrapper over :mod:`taskbridge.move` with rich progress and a table."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ..config import Settings, load_settings
from ..engine import Engine, load_engine_factory
from .support import fail, log_level_option, progress_bars, queue_names, set_log_level


def _engine(settings: Settings) -> Engine:
    return load_engine_factory(settings.engine)(settings)


@click.command()
@click.argument("modules", nargs=-1)
@click.option("--from-engine", "from_engine", required=True, help="engine holding the backlog: celery, dramatiq, ...")
@click.option("--from-broker", "from_broker", required=True, help="its broker URL")
@click.option("--to-engine", "to_engine", required=True, help="engine to move the backlog to")
@click.option("--to-broker", "to_broker", required=True, help="its broker URL")
@click.option("--queues", "-Q", default="", help="comma-separated queues (default: the default queue)")
@click.option("--dead-letters", is_flag=True, help="move the queues' dead letters instead of their waiting jobs")
@click.option(
    "--legacy",
    is_flag=True,
    help="move what plain producers left in the queues' legacy queues (dramatiq-sqs's <namespace>_<queue>, "
    "TASKBRIDGE_DRAMATIQ_SQS_LEGACY_NAMESPACE) instead of their waiting jobs; give the job modules whose "
    "aliases= name the producers' actors",
)
@click.option("--from-namespace", default=None, help="namespace at the source (default: TASKBRIDGE_NAMESPACE)")
@click.option("--to-namespace", default=None, help="namespace at the target (default: TASKBRIDGE_NAMESPACE)")
@click.option("--batch", type=click.IntRange(1, 5000), default=500, show_default=True, help="items per batch")
@click.option("--json", "json_output", is_flag=True, help="print the summary as JSON")
@log_level_option()
def move(
    modules: tuple[str, ...],
    from_engine: str,
    from_broker: str,
    to_engine: str,
    to_broker: str,
    queues: str,
    dead_letters: bool,
    legacy: bool,
    from_namespace: str | None,
    to_namespace: str | None,
    batch: int,
    json_output: bool,
    log_level: str | None,
) -> None:
    """Move every waiting job (or dead letter) of the queues from one engine x broker to another.

    Each job keeps its id, attempt, due time, expiry, chain and headers; it is removed at the source
    only once the target has stored it, so a move stopped at any point loses nothing: run it again.
    MODULES: job modules to import, whose ``aliases=`` let messages of plain (unmigrated) producers
    be read and moved like taskbridge's own.
    """
    from ..move import Mover
    from ..worker import import_job_modules

    set_log_level(log_level)
    if legacy and dead_letters:
        raise click.UsageError("--legacy moves waiting jobs: leave out --dead-letters")
    if legacy and not modules:
        raise click.UsageError(
            "--legacy moves plain producers' messages, which only the jobs declaring their names in "
            "aliases= can read: name those jobs' modules, e.g. taskbridge move myapp.jobs --legacy ..."
        )

    try:
        import_job_modules(list(modules))
        source_settings = load_settings(
            engine=from_engine, broker_url=from_broker, **({"namespace": from_namespace} if from_namespace else {})
        )
        target_settings = load_settings(
            engine=to_engine, broker_url=to_broker, **({"namespace": to_namespace} if to_namespace else {})
        )
        names = queue_names(queues, source_settings)
        if legacy and getattr(load_engine_factory(source_settings.engine), "legacy_holdings", None) is None:
            raise click.UsageError(f"the {from_engine} engine reads no queue outside the layout: leave out --legacy")
        source, target = _engine(source_settings), _engine(target_settings)
        mover = Mover(source, target, source_settings, target_settings, batch=batch, legacy=legacy)
        try:
            with progress_bars(not json_output) as progress:
                tasks = {}
                for name in names:
                    waiting = mover.waiting(name, dead_letters)
                    tasks[name] = progress.add_task(f"{name}", total=waiting or None)

                def advance(queue: str, count: int) -> None:
                    progress.advance(tasks[queue], count)

                reports = mover.move(names, dead_letters=dead_letters, progress=advance)
        finally:
            source.close()
            target.close()
    except Exception as exc:
        fail(exc)
    if json_output:
        click.echo(json.dumps([asdict(r) for r in reports], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"moved {'dead letters' if dead_letters else 'jobs'}: {from_engine} -> {to_engine}")
    table.add_column("queue")
    for column in ("moved", "of them delayed", "malformed", "possibly moved twice", "still at source", "seconds"):
        table.add_column(column, justify="right")
    for r in reports:
        counts = (r.moved, r.delayed, r.malformed, r.possibly_twice, r.left)
        table.add_row(r.queue, *(str(n) for n in counts), f"{r.seconds:.1f}")
    console = Console()
    console.print(table)
    for r in reports:
        if r.note:
            console.print(f"{r.queue}: {r.note}")
    if any(r.malformed for r in reports):
        where = "left in the dead letters" if dead_letters else "dead-lettered at the source"
        console.print(f"malformed items carry no envelope: {where} (see taskbridge dead list)")
    if any(r.left for r in reports):
        console.print(
            "items still at the source arrived during the move or are out of reach for now "
            "(SQS holds a delayed message until it is due): run the same command again"
        )
