"""The ``taskbridge move`` and ``taskbridge dead`` commands: thin click wrappers over
:mod:`taskbridge.move` and :mod:`taskbridge.dead`, with rich progress and tables."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import click

from .cli_support import fail, log_level_option, set_log_level
from .config import Settings, get_settings, load_settings
from .engine import Engine, load_engine_factory
from .units import parse_duration


def _engine(settings: Settings) -> Engine:
    return load_engine_factory(settings.engine)(settings)


def _queues(value: str, settings: Settings) -> list[str]:
    return [q for q in value.split(",") if q] or [settings.default_queue]


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress


@click.command()
@click.option("--from-engine", "from_engine", required=True, help="engine holding the backlog: celery, dramatiq, ...")
@click.option("--from-broker", "from_broker", required=True, help="its broker URL")
@click.option("--to-engine", "to_engine", required=True, help="engine to move the backlog to")
@click.option("--to-broker", "to_broker", required=True, help="its broker URL")
@click.option("--queues", "-Q", default="", help="comma-separated queues (default: the default queue)")
@click.option("--dead-letters", is_flag=True, help="move the queues' dead letters instead of their waiting jobs")
@click.option("--from-namespace", default=None, help="namespace at the source (default: TASKBRIDGE_NAMESPACE)")
@click.option("--to-namespace", default=None, help="namespace at the target (default: TASKBRIDGE_NAMESPACE)")
@click.option("--batch", type=click.IntRange(1, 5000), default=500, show_default=True, help="items per batch")
@click.option("--json", "json_output", is_flag=True, help="print the summary as JSON")
@log_level_option()
def move(
    from_engine: str,
    from_broker: str,
    to_engine: str,
    to_broker: str,
    queues: str,
    dead_letters: bool,
    from_namespace: str | None,
    to_namespace: str | None,
    batch: int,
    json_output: bool,
    log_level: str | None,
) -> None:
    """Move every waiting job (or dead letter) of the queues from one engine x broker to another.

    Each job keeps its id, attempt, due time, expiry, chain and headers; it is removed at the source
    only once the target has stored it, so a move stopped at any point loses nothing: run it again.
    """
    from .move import Mover

    set_log_level(log_level)

    try:
        source_settings = load_settings(
            engine=from_engine, broker_url=from_broker, **({"namespace": from_namespace} if from_namespace else {})
        )
        target_settings = load_settings(
            engine=to_engine, broker_url=to_broker, **({"namespace": to_namespace} if to_namespace else {})
        )
        names = _queues(queues, source_settings)
        source, target = _engine(source_settings), _engine(target_settings)
        mover = Mover(source, target, source_settings, target_settings, batch=batch)
        try:
            with _progress(not json_output) as progress:
                tasks = {}
                for name in names:
                    waiting = source.depth(name + source_settings.dead_letter_suffix if dead_letters else name)
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


@click.group()
def dead() -> None:
    """Dead letters: list, show, replay, purge (the engine's own dead letters included)."""


def _dead_letters() -> tuple[Any, Settings]:
    """The configured engine's dead letters (the process-wide engine: the embedded one is in this process)."""
    from .dead import DeadLetters
    from .engine import get_engine

    return DeadLetters(get_engine(), get_settings()), get_settings()


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dead.command("list")
@click.option("--queue", "-Q", default="", help="comma-separated queues (default: the default queue)")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True, help="show at most this many")
@click.option("--json", "json_output", is_flag=True, help="one JSON document")
@log_level_option()
def dead_list(queue: str, limit: int, json_output: bool, log_level: str | None) -> None:
    """List dead letters: id, job, reason, attempt, when, first line of the error."""
    set_log_level(log_level)
    try:
        letters, settings = _dead_letters()
        rows: list[dict[str, Any]] = []
        for name in _queues(queue, settings):
            for batch in letters.scan(name):
                rows.extend(letter.summary() for letter in batch[: limit - len(rows)])
                if len(rows) >= limit:
                    break
            if len(rows) >= limit:
                break
    except Exception as exc:
        fail(exc)
    if json_output:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dead letters ({len(rows)})")
    for column in ("id", "job", "queue", "attempt", "when", "reason", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"] or "-"),
            str(row["job"] or "-"),
            row["queue"],
            str(row["attempt"] or "-"),
            _when(row["failed_at"]),
            row["reason"][:80],
            row["error"][:80],
        )
    Console().print(table)


@dead.command("show")
@click.argument("letter_id")
@click.option("--queue", "-Q", default="", help="comma-separated queues to look in (default: the default queue)")
@log_level_option()
def dead_show(letter_id: str, queue: str, log_level: str | None) -> None:
    """Show one dead letter in full, with the traceback of its last failure."""
    set_log_level(log_level)
    try:
        letters, settings = _dead_letters()
        found = None
        for name in _queues(queue, settings):
            for batch in letters.scan(name):
                found = next((letter.record() for letter in batch if letter.id == letter_id), None)
                if found:
                    break
            if found:
                break
    except Exception as exc:
        fail(exc)
    if found is None:
        click.echo(f"no dead letter with id {letter_id}", err=True)
        sys.exit(1)
    for key in ("id", "job", "queue", "attempt", "reason", "origin"):
        click.echo(f"{key}: {found[key]}")
    click.echo(f"failed_at: {_when(found['failed_at'])}")
    click.echo(f"body: {found['body']}")
    click.echo("traceback:\n" + (found["traceback"] or "(none recorded)"))


@dead.command("replay")
@click.argument("letter_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every dead letter of the queues")
@click.option("--queue", "-Q", default="", help="comma-separated queues (default: the default queue)")
@log_level_option()
def dead_replay(letter_id: str | None, replay_all: bool, queue: str, log_level: str | None) -> None:
    """Run a dead letter (ID, or --all) again with attempts reset; a chain resumes where it stopped."""
    set_log_level(log_level)
    if bool(letter_id) == replay_all:
        raise click.UsageError("give one dead letter ID or --all")
    replayed = skipped = 0
    try:
        letters, settings = _dead_letters()
        with _progress(replay_all) as progress:
            for name in _queues(queue, settings):
                task = progress.add_task(f"replay {name}", total=letters.count(name) or None)
                for batch in letters.scan(name):
                    chosen = [letter for letter in batch if not letter_id or letter.id == letter_id]
                    done = letters.replay(chosen)
                    replayed += done
                    skipped += len(chosen) - done
                    progress.advance(task, len(batch))
                    if letter_id and chosen:
                        break
                if letter_id and (replayed or skipped):
                    break
    except Exception as exc:
        fail(exc)
    click.echo(f"replayed {replayed}" + (f"; {skipped} carry no runnable envelope and stay dead" if skipped else ""))
    if letter_id and not (replayed or skipped):
        sys.exit(1)


@dead.command("purge")
@click.option("--queue", "-Q", default="", help="comma-separated queues (default: the default queue)")
@click.option("--older-than", default=None, help="only dead letters older than this, e.g. 7d, 12h")
@log_level_option()
def dead_purge(queue: str, older_than: str | None, log_level: str | None) -> None:
    """Drop dead letters for good (all of them, or those older than --older-than)."""
    set_log_level(log_level)
    from .dead import older_than as is_older

    try:
        cutoff = parse_duration(older_than, what="--older-than") if older_than else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    purged = 0
    try:
        letters, settings = _dead_letters()
        with _progress(True) as progress:
            for name in _queues(queue, settings):
                task = progress.add_task(f"purge {name}", total=letters.count(name) or None)
                for batch in letters.scan(name):
                    chosen = [letter for letter in batch if cutoff is None or is_older(letter, cutoff)]
                    letters.remove(chosen)
                    purged += len(chosen)
                    progress.advance(task, len(batch))
    except Exception as exc:
        fail(exc)
    click.echo(f"purged {purged}")
