"""The distribution's name and its extras: which extra brings a missing package."""

from __future__ import annotations

import importlib.util

from .config import get_settings
from .errors import ConfigurationError

DISTRIBUTION = "taskbridge-jobs"
"""The name taskbridge is installed under; the import name stays ``taskbridge``."""


class MissingDependency(ConfigurationError):
    """A package that the configured engine or transport needs is not installed."""


def install_hint(*extras: str) -> str:
    """The pip command that installs ``extras``."""
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


def require(modules: dict[str, str], what: str) -> None:
    """Raise :class:`MissingDependency` naming the extra if a module in ``modules`` (module -> extra)
    cannot be imported; ``what`` says who needs it, e.g. "the celery engine on redis://"."""
    missing = {module: extra for module, extra in modules.items() if importlib.util.find_spec(module) is None}
    if missing:
        extras = sorted(set(missing.values()))
        raise MissingDependency(
            f"{what} needs {', '.join(sorted(missing))}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: {install_hint(*extras)}"
        )


def transport_extra(kind: str) -> str | None:
    """The extra that brings the clients of a transport (a :data:`taskbridge.transports.Kind`)."""
    return {"redis": "redis", "amqp": "rabbitmq", "sqs": "sqs"}.get(kind)


def configured_hint() -> str:
    """The pip command for the configured engine and transport."""
    settings = get_settings()
    extras = [e for e in (settings.engine, transport_extra(settings.transport.kind)) if e and e != "memory"]
    return install_hint(*extras) if extras else f"pip install '{DISTRIBUTION}'"
