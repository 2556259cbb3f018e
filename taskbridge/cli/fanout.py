"""``taskbridge fanout status ID``: a fan-out's progress, chunks done of total and an ETA."""

from __future__ import annotations

import json
import sys

import click

from .support import fail, log_level_option, set_log_level


@click.group("fanout")
def fanout() -> None:
    """Chunked fan-outs started with taskbridge.workflows.fan_out."""


@fanout.command("status")
@click.argument("fan_out_id")
@click.option("--json", "as_json", is_flag=True, help="print the progress record as JSON")
@log_level_option()
def fanout_status(fan_out_id: str, as_json: bool, log_level: str | None) -> None:
    """Show chunks done / total, items published and an ETA of the fan-out FAN_OUT_ID."""
    from ..workflows import progress

    set_log_level(log_level)
    try:
        found = progress(fan_out_id)
    except Exception as exc:
        fail(exc)
    if found is None:
        click.echo(f"no fan-out {fan_out_id} in the coordination store (unknown, or finished long ago)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found))
        return
    total = "?" if found["total"] is None else f"{found['total']:,}"
    state = "finished" if found["finished"] else "running"
    eta = "" if found["eta"] is None or found["finished"] else f", ETA {found['eta']:.0f} s"
    click.echo(
        f"fan-out {fan_out_id} of {found['job']}: {state}, chunks {found['chunks']:,} / {total}, "
        f"{found['items']:,} jobs published{eta}"
    )
