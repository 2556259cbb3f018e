"""Names that look like settings but are none: a warning naming the closest setting, an error when strict."""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Iterable, Mapping

from .errors import ConfigurationError

log = logging.getLogger("taskbridge.config")

ENV_PREFIX = "TASKBRIDGE_"
OTHER_PREFIXES = ("TASKBRIDGE_CONTRACT_", "TASKBRIDGE_TEST_")
"""Variables read by the contract suite and by tests."""
NOT_SETTINGS = frozenset({"TASKBRIDGE_CONFIG", "TASKBRIDGE_METRICS_ACTIVE"})
"""Variables taskbridge reads that are not fields of the settings."""

_reported: set[str] = set()
_reported_lock = threading.Lock()


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name``, if one is close enough to be a likely typo."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_variables(
    environ: Mapping[str, str],
    fields: Iterable[str],
    prefix: str = ENV_PREFIX,
    skip_prefixes: Iterable[str] = OTHER_PREFIXES,
) -> list[str]:
    """A problem for every ``prefix*`` variable that names none of ``fields``."""
    known = {prefix + field.upper() for field in fields}
    skipped = tuple(p for p in skip_prefixes if p != prefix)
    problems = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith(prefix) or name in known or name in NOT_SETTINGS or name.startswith(skipped):
            continue
        guess = closest(name, known)
        hint = f"; did you mean {guess}?" if guess else ""
        problems.append(f"unknown environment variable {variable}{hint}")
    return problems


def unknown_keys(
    values: Mapping[str, object],
    fields: Iterable[str],
    where: str,
    sections: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """A problem for every key in a configuration file that names no setting; the keys of a table
    named in ``sections`` (``[tool.taskbridge.celery]``) are checked against that section's fields."""
    known = list(fields)
    sections = sections or {}
    problems = []
    for key, value in values.items():
        if key in sections and isinstance(value, Mapping):
            problems += unknown_keys(
                {f"{key}.{inner}": item for inner, item in value.items()},
                [f"{key}.{field}" for field in sections[key]],
                where,
            )
            continue
        if key in known:
            continue
        guess = closest(key, known)
        hint = f"; did you mean {guess!r}?" if guess else ""
        problems.append(f"unknown setting {key!r} in {where}{hint}")
    return problems


def report(problems: list[str], *, strict: bool) -> None:
    """Raise the problems as one error when ``strict``; else log each once per process."""
    if not problems:
        return
    if strict:
        raise ConfigurationError("unknown taskbridge settings (strict is on):\n  " + "\n  ".join(problems))
    with _reported_lock:
        fresh = [p for p in problems if p not in _reported]
        _reported.update(fresh)
    for problem in fresh:
        log.warning("%s (ignored; with TASKBRIDGE_STRICT=1 this is an error)", problem)
