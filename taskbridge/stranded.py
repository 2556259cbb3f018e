"""At worker start: messages other engines left on this broker, in places this worker never reads.

Each engine with the optional ``holdings(queue)`` port method says where it keeps a queue's
messages on the broker (a Redis key, an SQS or RabbitMQ queue) and how many each place holds.
Places this worker's engine also uses are shared (the main queue on RabbitMQ and SQS); any other
place holding messages is a stranded backlog, and the warning names the ``taskbridge move``
command that brings it over. So is a queue outside the layout that another engine's workers read
beside the queue (its optional ``legacy_holdings``: plain dramatiq-sqs producers' queue) while this
engine's do not: its command is ``taskbridge move --legacy``.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import Settings, mask_url
from .engine import Engine, available_engines, load_engine_factory
from .layout import dead_letter_queue

log = logging.getLogger("taskbridge.worker")

Holdings = Callable[[str], Mapping[str, int]]


def warn_about_stranded(
    engine: Engine, settings: Settings, queues: Sequence[str], modules: Sequence[str] = ()
) -> list[str]:
    """Log one warning per other engine holding messages of ``queues`` (or of their dead-letter
    queues, or of their legacy queues) that ``engine``'s worker will not see; returns the
    ``taskbridge move`` commands it suggested (a ``--legacy`` one names ``modules``, the worker's job
    modules, whose ``aliases=`` read those messages). Never raises: a failed check is logged at
    debug level and skipped."""
    own: Holdings | None = getattr(engine, "holdings", None)
    if own is None:
        return []
    try:
        own_places = {place for queue, _ in _sources(queues, settings) for place in own(queue)}
    except Exception as exc:
        log.debug("cannot look for stranded messages: %s", exc)
        return []
    reads_legacy = getattr(engine, "legacy_holdings", None) is not None
    commands: list[str] = []
    for name in sorted(available_engines()):
        if name == engine.name:
            continue
        other = _open_engine(name, settings)
        if other is None:
            continue
        try:
            found = [_check_engine(other, name, engine.name, settings, queues, own_places)]
            if not reads_legacy:
                found.append(_check_legacy(other, name, engine.name, settings, queues, modules))
        finally:
            other.close()
        commands.extend(command for command in found if command)
    return commands


def _open_engine(name: str, settings: Settings) -> Any:
    """Engine ``name`` on this broker, when it has the optional ``holdings`` (else None)."""
    try:
        factory: Any = load_engine_factory(name)
    except Exception as exc:  # its extra is not installed
        log.debug("not looking for %s messages: %s", name, exc)
        return None
    if getattr(factory, "holdings", None) is None:
        return None
    try:
        return factory(settings)
    except Exception as exc:
        log.debug("cannot look for %s messages on this broker: %s", name, exc)
        return None


def _check_legacy(
    other: Any, name: str, own_name: str, settings: Settings, queues: Sequence[str], modules: Sequence[str]
) -> str | None:
    if getattr(other, "legacy_holdings", None) is None:
        return None
    stranded: dict[str, int] = {}
    moved_queues: set[str] = set()
    try:
        for queue in queues:
            for place, count in other.legacy_holdings(queue).items():
                if count:
                    stranded[place] = count
                    moved_queues.add(queue)
    except Exception as exc:
        log.debug("cannot look for %s legacy queues on this broker: %s", name, exc)
        return None
    if not stranded:
        return None
    url = shlex.quote(mask_url(settings.broker_url))
    command = (
        f"taskbridge move {' '.join(modules) or 'MODULES'} --legacy --from-engine {name} --from-broker {url} "
        f"--to-engine {own_name} --to-broker {url} --queues {','.join(sorted(moved_queues))}"
    )
    log.warning(
        "%d message(s) of queue(s) %s wait in queues plain producers send to (%s), which %s workers read "
        "and this %s worker does not. Move them with: %s",
        sum(stranded.values()),
        ",".join(sorted(moved_queues)),
        ", ".join(f"{place}: {count}" for place, count in sorted(stranded.items())),
        name,
        own_name,
        command,
    )
    return command


def _sources(queues: Sequence[str], settings: Settings) -> list[tuple[str, bool]]:
    """Each queue, then its dead-letter queue (flagged), as the places to look at."""
    return [(q, False) for q in queues] + [(dead_letter_queue(q, settings), True) for q in queues]


def _check_engine(
    other: Any, name: str, own_name: str, settings: Settings, queues: Sequence[str], own_places: set[str]
) -> str | None:
    stranded: dict[str, int] = {}
    moved_queues: set[str] = set()
    dead_letters = False
    try:
        holdings: Holdings = other.holdings
        for (source, is_dead), queue in zip(_sources(queues, settings), [*queues, *queues], strict=True):
            for place, count in holdings(source).items():
                if count and place not in own_places:
                    stranded[place] = count
                    moved_queues.add(queue)
                    dead_letters = dead_letters or is_dead
    except Exception as exc:
        log.debug("cannot look for %s messages on this broker: %s", name, exc)
        return None
    if not stranded:
        return None
    url = shlex.quote(mask_url(settings.broker_url))
    command = (
        f"taskbridge move --from-engine {name} --from-broker {url} --to-engine {own_name} --to-broker {url} "
        f"--queues {','.join(sorted(moved_queues))}{' --dead-letters' if dead_letters else ''}"
    )
    log.warning(
        "%d message(s) of queue(s) %s were written under the %s engine on this broker, where this %s worker "
        "never reads them (%s). Move them with: %s",
        sum(stranded.values()),
        ",".join(sorted(moved_queues)),
        name,
        own_name,
        ", ".join(f"{place}: {count}" for place, count in sorted(stranded.items())),
        command,
    )
    return command
