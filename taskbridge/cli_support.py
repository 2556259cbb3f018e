"""What the ``taskbridge`` commands share: one-line errors, the log level option, the settings view."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import click

from .config import Settings, banner, mask_url
from .errors import TaskbridgeError
from .extras import configured_hint, install_hint

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CONNECTION_MODULES = ("redis", "kombu", "amqp", "pika", "botocore", "dramatiq", "celery")

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from .job import JobCall


def log_level_option(default: str | None = None) -> Callable[[F], F]:
    """``--log-level``, accepted before the command (``default`` set) and after it (``None``: keep)."""
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=default,
        show_default=default is not None,
        help="log level: " + ", ".join(LOG_LEVELS),
    )


_CHATTY = ("botocore", "boto3", "urllib3", "pika")
"""Libraries that log routine steps (credentials found, connection opened) at INFO."""


def set_log_level(level: str | None) -> None:
    """Set the root log level (``None`` leaves it as the group's ``--log-level`` set it); the
    libraries in :data:`_CHATTY` speak only from WARNING unless the level is DEBUG."""
    if level is not None:
        logging.getLogger().setLevel(level.upper())
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


def fail(exc: Exception) -> NoReturn:
    """Print one line for a taskbridge error or a lost server, exit 2; anything else is a bug: re-raise."""
    if isinstance(exc, TaskbridgeError):
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if isinstance(exc, ImportError):
        click.echo(
            f"error: a package is missing ({exc}); install the extras of your engine and transport: "
            f"{configured_hint()}",
            err=True,
        )
        sys.exit(2)
    fault = _connection_fault(exc)
    if fault is None:
        raise exc
    from .config import get_settings

    settings = get_settings()
    click.echo(
        f"error: a server connection failed ({fault}); check that the broker at {mask_url(settings.broker_url)} "
        f"and the coordination store at {mask_url(settings.effective_coordination_url)} are running and reachable",
        err=True,
    )
    sys.exit(2)


def _connection_fault(exc: BaseException) -> str | None:
    """The cause, if ``exc`` (or an exception it came from) is a transport's connection error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__.split(".")[0]
        name = type(current).__name__
        if isinstance(current, (ConnectionError, TimeoutError)) or (
            module in _CONNECTION_MODULES and ("Connection" in name or "Operational" in name or "Refused" in name)
        ):
            return " ".join(str(current).split())[:200] or name
        current = current.__cause__ or current.__context__
    return None


def unknown_job_message(job_name: str) -> str:
    """No job by that name: list the jobs its module declares, if it has any."""
    from .job import registry

    module = job_name.rsplit(".", 1)[0] if "." in job_name else ""
    jobs = sorted(name for name in registry() if module and name.startswith(module + "."))
    if jobs:
        return f"no job named {job_name!r}; {module} declares: {', '.join(jobs)}"
    if module in sys.modules:
        return f"no job named {job_name!r}; module {module} declares no @job"
    return f"no job named {job_name!r}; use module.function"


def require_contract_extra() -> None:
    """The contract suite runs on pytest: without it, say which extra brings it and exit 2."""
    if importlib.util.find_spec("pytest") is None:
        click.echo(f"error: taskbridge contract needs pytest: {install_hint('contract')}", err=True)
        sys.exit(2)


def describe_settings(settings: Settings) -> str:
    """The ``taskbridge config`` view: the banner, then each setting, its value and where it came from."""
    lines = [banner(settings), ""]
    secret = {"broker_url", "coordination_url", "sentry_dsn"}
    width = max(len(name) for name in Settings.model_fields)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        shown = mask_url(value) if name in secret and isinstance(value, str) else str(value)
        if name == "sentry_dsn" and value:
            shown = "(set)"
        elif name == "signing_keys_accepted":
            shown = f"({len(value)} key{'' if len(value) == 1 else 's'})" if value else "[]"
        lines.append(f"{name:<{width}}  {shown}  [{settings.origin(name)}]")
    return "\n".join(lines)


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
