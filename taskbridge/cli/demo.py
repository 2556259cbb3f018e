"""``taskbridge demo``: example jobs using every option, run on the embedded engine."""

from __future__ import annotations

import sys

import click

from .support import log_level_option, set_log_level


@click.command()
@log_level_option()
def demo(log_level: str | None) -> None:
    """Run example jobs using every option on the embedded engine and show what happened."""
    from ..demo import run_demo

    set_log_level(log_level)
    sys.exit(run_demo())
