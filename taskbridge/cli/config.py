"""``taskbridge config``: the settings in force and where each comes from."""

from __future__ import annotations

import click

from ..config import Settings, banner, mask_url, setting_names
from .support import configure, fail, log_level_option, set_log_level


@click.command("config")
@log_level_option()
def config_command(log_level: str | None) -> None:
    """Show the settings in force and where each comes from (environment, file, default)."""
    from ..config import get_settings

    set_log_level(log_level)
    try:
        configure()
        click.echo(describe_settings(get_settings()))
    except Exception as exc:
        fail(exc)


def describe_settings(settings: Settings) -> str:
    """The ``taskbridge config`` view: the banner, then each setting, its value and where it came from."""
    lines = [banner(settings), ""]
    secret = {"broker_url", "coordination_url", "sentry_dsn"}
    names = setting_names()
    width = max(len(name) for name in names)
    for name in names:
        section, _, key = name.rpartition(".")
        value = getattr(getattr(settings, section) if section else settings, key)
        shown = mask_url(value) if name in secret and isinstance(value, str) else str(value)
        if name == "sentry_dsn" and value:
            shown = "(set)"
        elif name == "signing_keys_accepted":
            shown = f"({len(value)} key{'' if len(value) == 1 else 's'})" if value else "[]"
        lines.append(f"{name:<{width}}  {shown}  [{settings.origin(name)}]")
    return "\n".join(lines)
