"""Finding the configuration files: ``TASKBRIDGE_CONFIG``, else ``taskbridge.toml`` and
``[tool.taskbridge]`` in ``pyproject.toml``, looked for from the working directory up to the project root."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_ENV = "TASKBRIDGE_CONFIG"
TOML_NAME = "taskbridge.toml"
PYPROJECT_NAME = "pyproject.toml"


@dataclass(frozen=True)
class ConfigFile:
    """One file taskbridge reads settings from, and the settings it holds."""

    path: Path
    values: Mapping[str, Any]

    @property
    def where(self) -> str:
        """The file, and the table in it for a pyproject.toml."""
        return f"{self.path} [tool.taskbridge]" if self.path.name == PYPROJECT_NAME else str(self.path)


def find_config_files(start: Path | None = None, environ: Mapping[str, str] | None = None) -> list[ConfigFile]:
    """The configuration files in force, the one that wins first.

    ``TASKBRIDGE_CONFIG=path`` names the one file (a pyproject.toml is read from its
    ``[tool.taskbridge]`` table). Otherwise the directories from ``start`` (the working directory)
    upwards are searched for ``taskbridge.toml`` and for a ``pyproject.toml`` with a
    ``[tool.taskbridge]`` table, the nearest of each kind, up to the project root: the first
    directory holding ``.git`` or a ``pyproject.toml``.
    """
    environ = os.environ if environ is None else environ
    given = environ.get(CONFIG_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"{CONFIG_ENV}={given}: no such file")
        return [_read(path.resolve())]
    toml: ConfigFile | None = None
    pyproject: ConfigFile | None = None
    try:
        directory = (start or Path.cwd()).resolve()
    except OSError:  # the working directory was removed
        return []
    for folder in (directory, *directory.parents):
        candidate = folder / TOML_NAME
        if toml is None and candidate.is_file():
            toml = _read(candidate)
        project = folder / PYPROJECT_NAME
        if project.is_file():
            found = _read(project)
            if found.values:
                pyproject = found
            break
        if (folder / ".git").exists():
            break
    return [f for f in (toml, pyproject) if f is not None]


def _read(path: Path) -> ConfigFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the taskbridge settings in {path}: {exc}") from None
    if path.name == PYPROJECT_NAME:
        table = data.get("tool", {}).get("taskbridge", {})
        if not isinstance(table, dict):
            raise ConfigurationError(f"{path}: [tool.taskbridge] must be a table")
        return ConfigFile(path, table)
    return ConfigFile(path, data)
