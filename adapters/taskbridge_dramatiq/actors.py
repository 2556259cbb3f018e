"""One Dramatiq actor per job, plus a fallback actor; each hands the raw envelope text to the runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.broker import MessageProxy

from taskbridge.envelope import Envelope
from taskbridge.legacy import is_legacy
from taskbridge.spec import JobSpec

from .brokers import UNKNOWN_JOB_ACTOR, TaskbridgeBroker
from .brokers.common import taskbridge_queue


def to_message(envelope: Envelope) -> Message[Any]:
    """The Dramatiq message carrying ``envelope``: its JSON text is the single argument."""
    return Message(
        queue_name=envelope.queue,
        actor_name=envelope.job,
        args=(envelope.encode(),),
        kwargs={},
        options={},
        message_id=envelope.id,
        message_timestamp=int(envelope.enqueued_at * 1000),
    )


def raw_body(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """The envelope text a message carries; anything else is passed on as JSON for the runner to reject."""
    if len(args) == 1 and not kwargs:
        if isinstance(args[0], str):
            return args[0]
        if isinstance(args[0], dict):
            return json.dumps(args[0])
    return json.dumps({"args": list(args), "kwargs": kwargs}, default=repr)


def legacy_item(message: MessageProxy | None) -> str | None:
    """The whole message as JSON when it names a job's old name (``@job(aliases=...)``), for
    ``Runner.run_item`` to convert; None for a message that carries an envelope."""
    if message is None or not is_legacy(message.actor_name, message.args, message.kwargs):
        return None
    return json.dumps(message.asdict(), default=repr)


def message_queue(message: MessageProxy) -> str:
    """The taskbridge queue a message came from (Dramatiq's delay-queue or legacy-queue suffix removed)."""
    return taskbridge_queue(message.queue_name)


def declare_actors(
    broker: TaskbridgeBroker,
    specs: Iterable[JobSpec],
    handle: Callable[..., None],
    *,
    default_queue: str,
    fallback_queue: str,
) -> None:
    """Declare an actor per job on ``broker``, all running ``handle``, and the fallback actor that
    receives messages naming no declared job (so the runner dead-letters them)."""
    broker_: Any = broker
    for spec in specs:
        dramatiq.Actor(
            handle,
            broker=broker_,
            actor_name=spec.name,
            queue_name=spec.resolved_queue(default_queue),
            priority=0,
            options={},
        )
    broker.fallback_actor = dramatiq.Actor(
        handle, broker=broker_, actor_name=UNKNOWN_JOB_ACTOR, queue_name=fallback_queue, priority=0, options={}
    )
