"""The ``taskbridge`` command: one module per command group (worker, scheduler, enqueue, status,
config, contract, demo, job, fanout, move, dead, migrate), gathered here under :func:`main`.

Each command imports what it runs inside its function, so ``taskbridge --help`` stays quick.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from . import config, contract, dead, demo, enqueue, fanout, job, migrate, move, scheduler, status, worker
from .support import log_level_option, set_log_level

__all__ = ["main"]


@click.group()
@click.version_option(__version__, "--version", prog_name="taskbridge", message="%(prog)s %(version)s")
@log_level_option(default="INFO")
def main(log_level: str) -> None:
    """taskbridge: one @job API over Celery, Dramatiq and the embedded engine."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    set_log_level(log_level)


for _command in (
    worker.worker,
    scheduler.scheduler,
    enqueue.enqueue,
    demo.demo,
    contract.contract,
    status.status,
    migrate.migrate,
    job.job_command,
    fanout.fanout,
    config.config_command,
    move.move,
    dead.dead,
):
    main.add_command(_command)
