"""``taskbridge dead list | show | replay | purge``: a thin click wrapper over :mod:`taskbridge.dead`,
with rich progress and tables."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

from ..config import Settings, get_settings
from ..units import parse_duration
from .support import fail, log_level_option, progress_bars, queue_names, set_log_level


@click.group()
def dead() -> None:
    """Dead letters: list, show, replay, purge (the engine's own dead letters included)."""


def _dead_letters() -> tuple[Any, Settings]:
    """The configured engine's dead letters (the process-wide engine: the embedded one is in this process)."""
    from ..dead import DeadLetters
    from ..engine import get_engine

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
        for name in queue_names(queue, settings):
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
        for name in queue_names(queue, settings):
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
        with progress_bars(replay_all) as progress:
            for name in queue_names(queue, settings):
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
    from ..dead import older_than as is_older

    try:
        cutoff = parse_duration(older_than, what="--older-than") if older_than else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    purged = 0
    try:
        letters, settings = _dead_letters()
        with progress_bars(True) as progress:
            for name in queue_names(queue, settings):
                task = progress.add_task(f"purge {name}", total=letters.count(name) or None)
                for batch in letters.scan(name):
                    chosen = [letter for letter in batch if cutoff is None or is_older(letter, cutoff)]
                    letters.remove(chosen)
                    purged += len(chosen)
                    progress.advance(task, len(batch))
    except Exception as exc:
        fail(exc)
    click.echo(f"purged {purged}")
