"""``taskbridge job ID``: one job's record — state, attempts, times, last error, result."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click

from .support import fail, log_level_option, set_log_level


@click.command("job")
@click.argument("job_id")
@click.option("--json", "json_output", is_flag=True, help="print the record as JSON")
@log_level_option()
def job_command(job_id: str, json_output: bool, log_level: str | None) -> None:
    """Show the record of the job JOB_ID (printed by enqueue, or ref.id); exits 1 when there is none."""
    from ..config import load_settings, set_settings
    from ..handles import get_job

    set_log_level(log_level)
    try:
        set_settings(load_settings())
        record = get_job(job_id).refresh()
    except Exception as exc:
        fail(exc)
    if record is None:
        if json_output:
            click.echo(json.dumps({"id": job_id, "state": "unknown"}))
        else:
            click.echo(
                f"{job_id}: unknown (not tracked — declare the job with result_ttl= or set track_jobs — "
                "its record expired, or the store is unreachable)"
            )
        sys.exit(1)
    data = record.to_dict()
    if json_output:
        click.echo(json.dumps(data, indent=2))
        return
    for name in ("id", "job", "queue", "state", "attempts"):
        click.echo(f"{name:12} {data[name]}")
    for name in ("enqueued_at", "not_before", "expires_at", "started_at", "finished_at"):
        if data[name] is not None:
            when = dt.datetime.fromtimestamp(data[name], dt.timezone.utc).isoformat(timespec="milliseconds")
            click.echo(f"{name:12} {when}")
    if record.reason:
        click.echo(f"{'reason':12} {record.reason}")
    if record.error is not None:
        click.echo(f"{'error':12} {record.error}")
        if record.error.traceback:
            click.echo(record.error.traceback.rstrip())
    if record.keeps_result and data["state"] == "done":
        click.echo(f"{'result':12} {json.dumps(data['result'])}")
