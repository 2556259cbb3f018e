"""``taskbridge migrate PATH... [--write]``: the codemod from the command line."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--write", is_flag=True, help="rewrite the files in place (default: print a unified diff)")
def migrate(paths: tuple[str, ...], write: bool) -> None:
    """Rewrite Celery and Dramatiq task decorators under PATHS to @job, keeping each old task name as
    an alias. Prints a diff and a summary; what cannot be mapped safely is listed with file:line."""
    try:
        from ..migrate.run import migrate_paths
    except ImportError as exc:
        click.echo(f"error: the codemod needs libcst ({exc}): pip install 'taskbridge-jobs[migrate]'", err=True)
        sys.exit(2)
    report = migrate_paths(paths)
    if write:
        report.write()
    else:
        click.echo(report.diff(), nl=False)
    click.echo(report.summary(), nl=False, err=not write)
