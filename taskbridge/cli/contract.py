"""``taskbridge contract``: the contract suite on one engine x transport."""

from __future__ import annotations

import importlib.util
import sys

import click

from ..extras import install_hint
from .support import log_level_option, set_log_level


@click.command()
@click.option("--engine", default=None, help="engine to test (default: TASKBRIDGE_ENGINE)")
@click.option("--broker", default=None, help="broker URL (default: TASKBRIDGE_BROKER_URL)")
@click.option("--coordination", default=None, help="redis:// URL workers share (default: TASKBRIDGE_COORDINATION_URL)")
@click.option("-k", "keyword", default=None, help="only cases matching this pytest expression")
@log_level_option()
def contract(
    engine: str | None, broker: str | None, coordination: str | None, keyword: str | None, log_level: str | None
) -> None:
    """Run the contract suite on one engine x transport; exits non-zero if any case fails."""
    set_log_level(log_level)
    require_contract_extra()
    from ..testing.report import run_contract

    sys.exit(run_contract(engine=engine, broker=broker, coordination=coordination, keyword=keyword))


def require_contract_extra() -> None:
    """The contract suite runs on pytest: without it, say which extra brings it and exit 2."""
    if importlib.util.find_spec("pytest") is None:
        click.echo(f"error: taskbridge contract needs pytest: {install_hint('contract')}", err=True)
        sys.exit(2)
