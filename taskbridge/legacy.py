"""Messages from producers not yet migrated: Celery protocol-2 and Dramatiq messages for a job's old name.

During a rolling deploy, old producers keep sending ``myapp.tasks.send_report`` the way Celery or
Dramatiq does. A job that declares that name in ``@job(aliases=[...])`` runs those messages: the
old message's arguments, ETA, expiry and retry count become an envelope, and from then on it is an
ordinary taskbridge run (its retries are taskbridge envelopes). Only JSON bodies are read; a pickled
message is refused, unread, with :data:`PICKLE_HINT` saying how to switch the old producers.

:mod:`taskbridge.wire` calls :func:`from_celery` and :func:`from_dramatiq` for every engine message;
both return None when the message does not name an alias, so the wire layer goes on as before.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import get_settings
from .declared import registry
from .unwrapped import Unwrapped

if TYPE_CHECKING:
    from .job import Job

PICKLE_HINT = (
    "switch the old producers to JSON: Celery task_serializer='json' (and accept_content=['json']), "
    "Dramatiq's default JSONEncoder (remove dramatiq.set_encoder(PickleEncoder()))"
)
"""How to make old producers send what a taskbridge worker reads, for pickle dead-letter reasons."""

LEGACY_HEADER = "legacy"
"""Envelope header naming where a converted message came from, e.g. ``celery:myapp.tasks.send_report``."""

_DRAMATIQ_QUEUE_SUFFIXES = (".DQ", ".XQ")
_CELERY_CALLBACKS = ("callbacks", "errbacks", "chain", "chord")
_DRAMATIQ_CALLBACKS = ("pipe_target", "on_success", "on_failure", "group_completion_callbacks")


def job_for_alias(name: str) -> Job[..., Any] | None:
    """The job that declares ``name`` among its aliases, if any (a job may list its own name: a
    Celery task's default name is the same as the job's, ``module.function``)."""
    jobs = registry()
    current = jobs.get(name)
    if current is not None:
        return current if name in current.spec.aliases else None
    for handle in jobs.values():
        if name in handle.spec.aliases:
            return handle
    return None


def carries_envelope(args: Any, kwargs: Any) -> bool:
    """Whether an engine message's arguments are taskbridge's: exactly one, the envelope (an object
    or its JSON text, with a ``job`` field)."""
    if not isinstance(args, list | tuple) or len(args) != 1 or kwargs:
        return False
    (only,) = args
    if isinstance(only, dict):
        return "job" in only
    return isinstance(only, str) and only.startswith("{") and '"job"' in only


def is_legacy(name: str, args: Any, kwargs: Any) -> bool:
    """Whether a message for task or actor ``name`` with these arguments is an old producer's call
    of a job that declares ``name`` in ``aliases=``."""
    handle = job_for_alias(name)
    if handle is None:
        return False
    return name != handle.name or not carries_envelope(args, kwargs)


def looks_pickled(body: bytes | bytearray | str) -> bool:
    """Whether ``body`` starts like a pickle (protocol 2 or newer); it is never unpickled to find out."""
    return isinstance(body, bytes | bytearray) and len(body) > 2 and body[0] == 0x80 and 2 <= body[1] <= 5


def from_celery(data: list[Any], headers: Mapping[str, Any] | None) -> Unwrapped | None:
    """A Celery protocol-2 body ``[args, kwargs, embed]`` for an aliased task name, as an envelope.

    ``headers`` are the message's Celery headers (``task``, ``id``, ``eta``, ``expires``,
    ``retries``): on AMQP the transport's headers, in kombu's Redis and SQS messages the JSON's.
    """
    name = headers.get("task") if headers else None
    if not isinstance(name, str) or headers is None:
        return None
    handle = job_for_alias(name)
    if handle is None:
        return None
    if len(data) == 3 and name == handle.name and carries_envelope(data[0], data[1]):
        return None
    if len(data) != 3 or not isinstance(data[0], list) or not isinstance(data[1], dict):
        return Unwrapped(None, f"legacy Celery message for {name!r} is not [args, kwargs, embed]", form="celery")
    args, kwargs, embed = data
    if isinstance(embed, dict):
        used = [key for key in _CELERY_CALLBACKS if embed.get(key)]
        if used:
            return Unwrapped(None, _no_callbacks("Celery", name, used), form="celery")
    try:
        not_before = _celery_time(headers.get("eta"))
        expires_at = _celery_time(headers.get("expires"))
    except ValueError as exc:
        return Unwrapped(None, f"legacy Celery message for {name!r}: {exc}", form="celery")
    retries = headers.get("retries")
    envelope = _envelope(
        handle,
        message_id=headers.get("id"),
        args=args,
        kwargs=kwargs,
        attempt=_attempt(retries),
        enqueued_at=time.time(),
        not_before=not_before,
        expires_at=expires_at,
        origin=f"celery:{name}",
    )
    return Unwrapped(envelope, form="celery")


def from_dramatiq(data: dict[str, Any]) -> Unwrapped | None:
    """A Dramatiq message (fields already checked) for an aliased actor name, as an envelope."""
    name = data["actor_name"]
    if not is_legacy(name, data["args"], data["kwargs"]):
        return None
    handle = job_for_alias(name)
    assert handle is not None
    options: dict[str, Any] = data["options"]
    used = [key for key in _DRAMATIQ_CALLBACKS if options.get(key)]
    if used:
        return Unwrapped(None, _no_callbacks("Dramatiq", name, used), form="dramatiq")
    sent = float(data["message_timestamp"]) / 1000
    eta, max_age = options.get("eta"), options.get("max_age")
    envelope = _envelope(
        handle,
        message_id=data["message_id"],
        args=data["args"],
        kwargs=data["kwargs"],
        attempt=_attempt(options.get("retries")),
        enqueued_at=sent,
        not_before=_millis(eta),
        expires_at=None if _millis(max_age) is None else sent + (_millis(max_age) or 0.0),
        origin=f"dramatiq:{name}",
    )
    return Unwrapped(envelope, form="dramatiq")


def _envelope(
    handle: Job[..., Any],
    *,
    message_id: Any,
    args: list[Any],
    kwargs: dict[str, Any],
    attempt: int,
    enqueued_at: float,
    not_before: float | None,
    expires_at: float | None,
    origin: str,
) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "job": handle.name,
        "queue": handle.spec.resolved_queue(get_settings().default_queue),
        "args": args,
        "kwargs": kwargs,
        "attempt": attempt,
        "enqueued_at": enqueued_at,
        "not_before": not_before,
        "expires_at": expires_at,
        "headers": {LEGACY_HEADER: origin},
    }
    if isinstance(message_id, str) and message_id:
        envelope["id"] = message_id
    else:
        import os

        envelope["id"] = os.urandom(16).hex()
    return envelope


def _attempt(retries: Any) -> int:
    return retries + 1 if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0 else 1


def _millis(value: Any) -> float | None:
    """Dramatiq's times and durations are milliseconds; in seconds, or None if not a number."""
    return float(value) / 1000 if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _celery_time(value: Any) -> float | None:
    """Celery sends ``eta``/``expires`` as ISO 8601 text (naive means UTC, as Celery's ``enable_utc``)."""
    if value is None:
        return None
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"time {value!r} is neither ISO 8601 text nor a number")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {value!r} is not ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _no_callbacks(engine: str, name: str, used: list[str]) -> str:
    return (
        f"legacy {engine} message for {name!r} carries {', '.join(used)}, which taskbridge does not run; "
        "let an old worker take it (taskbridge move it back) or send it again from a migrated producer"
    )
