"""RabbitMQ queues that already exist with other arguments than the layout's: used as they are.

A queue that a Celery app not yet migrated, a plain client or an operator declared first (without
arguments, with a priority, not durable, ...) cannot be declared again with the layout's arguments
(taskbridge.layout): RabbitMQ answers PRECONDITION_FAILED (406) and closes the channel. Both engines
then *adopt* the queue: they take it as it is (a passive declare, on a fresh channel), keep going,
and this module logs one warning per queue and process saying what differs and what changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("taskbridge.layout")

PRECONDITION_FAILED = 406
"""AMQP reply code of a declaration whose arguments differ from the existing queue's."""

_lock = threading.Lock()
_adopted: dict[str, str] = {}


def is_adopted(queue: str) -> bool:
    """Whether ``queue`` is known, in this process, to exist with other arguments than the layout's."""
    with _lock:
        return queue in _adopted


def adopt(queue: str, layout: Mapping[str, Any], reply: str) -> None:
    """Remember that ``queue`` is used as it is; the first time, log what differs (``reply``: the
    broker's refusal of the layout's ``layout`` arguments) and what changes."""
    with _lock:
        if queue in _adopted:
            return
        _adopted[queue] = reply
    log.warning(
        "queue %r already exists on RabbitMQ with other arguments than taskbridge's layout, so it is used "
        "as it is (RabbitMQ: %s). The layout declares it durable with %s. What changes: %sthe queue's own "
        "arguments (a priority, a length limit, a message TTL, ...) apply to taskbridge's messages too. "
        "taskbridge's dead letters are not affected: the worker writes them itself, to the '-dead' queue of "
        "the queue a job ran from. To get the layout's queue, drain it (taskbridge move), delete it and let "
        "taskbridge declare it (docs/transports.md).",
        queue,
        reply,
        _describe(layout),
        _what_changes(layout),
    )


def forget(queue: str) -> None:
    """``queue`` is gone (deleted since): declare it with the layout's arguments again."""
    with _lock:
        _adopted.pop(queue, None)


def _describe(arguments: Mapping[str, Any]) -> str:
    if not arguments:
        return "no arguments"
    return ", ".join(f"{key}={value!r}" for key, value in sorted(arguments.items()))


def _what_changes(layout: Mapping[str, Any]) -> str:
    routing_key = layout.get("x-dead-letter-routing-key")
    if routing_key is not None:
        return (
            f"what RabbitMQ itself dead-letters from it (rejected or expired messages) does not go to "
            f"{routing_key!r}, where taskbridge's workers never send anything; "
        )
    if "x-message-ttl" in layout:
        return f"messages are not dropped after the layout's {layout['x-message-ttl']} ms but as the queue says; "
    return ""
