"""What the ``taskbridge`` commands share: one-line errors, the log level option, settings overrides,
queue names and progress bars."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from ..config import Settings, load_settings, mask_url, set_settings
from ..errors import TaskbridgeError
from ..extras import configured_hint

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CONNECTION_MODULES = ("redis", "kombu", "amqp", "pika", "botocore", "dramatiq", "celery")

F = TypeVar("F", bound=Callable[..., Any])


def configure(**overrides: Any) -> None:
    """Apply command-line overrides (those not ``None``) on top of the environment and files."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    set_settings(load_settings(**overrides))


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
    from ..config import get_settings

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


def queue_names(value: str, settings: Settings) -> list[str]:
    """The comma-separated queues of a ``--queues`` option, or the default queue."""
    return [q for q in value.split(",") if q] or [settings.default_queue]


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[Any]:
    """A rich progress display on stderr (shown only when ``enabled``)."""
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
