"""The guarded decode every taskbridge consumer applies to an item before Dramatiq sees it.

Dramatiq's consumers trust what they read: an item that is not a complete Dramatiq message crashes
the consumer thread (Redis), crash-loops the worker (RabbitMQ, ``"options": null``) or is logged and
left in the queue forever (SQS). Each taskbridge consumer hands the raw bytes to :func:`read_item`
instead, which returns a message Dramatiq can always handle: the Dramatiq message itself when the
item is a well-formed one carrying one envelope, otherwise a *stand-in* message that carries the raw
item to the runner's ``run_item`` (which runs the envelope inside another engine's wrapper, or
dead-letters the item to the dead letters of the queue it was read from). Either way the message
then takes Dramatiq's normal path, so it is acknowledged only after its outcome was stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from dramatiq import Message

from taskbridge.envelope import peek_job_name
from taskbridge.legacy import is_legacy
from taskbridge.wire import is_plain_dramatiq, parse_json, unwrap

from .common import UNKNOWN_JOB_ACTOR

RAW_ITEM_OPTION = "taskbridge_raw_item"
"""Option of a stand-in message; its value holds the item's transport content type and headers."""


@dataclass(frozen=True)
class CarriedItem:
    """An item that is not a well-formed Dramatiq message, as the transport held it."""

    body: bytes | str
    content_type: str | None = None
    headers: Mapping[str, Any] | None = None


def read_item(
    body: bytes | str,
    queue_name: str,
    *,
    content_type: str | None = None,
    headers: Mapping[str, Any] | None = None,
    known_actors: Container[str] = (),
) -> Message[Any]:
    """The Dramatiq message to hand to Dramatiq for an item read from ``queue_name``; never raises.

    A Dramatiq message (JSON, or base64 JSON as on SQS) with every field present and typed and one
    envelope argument is decoded as is, addressed to ``queue_name`` whatever queue it names.
    Anything else becomes a stand-in (see :func:`raw_item`) addressed to the actor of the job its
    envelope names when that job is in ``known_actors``.
    """
    if not content_type:
        plain = _plain_message(body, queue_name)
        if plain is not None:
            return plain
    item = unwrap(body, content_type=content_type, headers=headers)
    if item.form == "dramatiq" and item.payload is not None:
        message = _decoded(item.message if item.message is not None else body)
        if message is not None:
            # Dramatiq acknowledges through the consumer of message.queue_name: it must be this queue.
            return message if message.queue_name == queue_name else message.copy(queue_name=queue_name)
    job = peek_job_name(item.payload) if item.payload is not None else None
    actor = job if job is not None and job in known_actors else UNKNOWN_JOB_ACTOR
    return Message(
        queue_name=queue_name,
        actor_name=actor,
        args=(body,),
        kwargs={},
        options={RAW_ITEM_OPTION: {"content_type": content_type, "headers": dict(headers or {})}},
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )


def raw_item(message: Any) -> CarriedItem | None:
    """The raw item a stand-in message carries; None for a real Dramatiq message."""
    options = getattr(message, "options", None)
    marker = options.get(RAW_ITEM_OPTION) if isinstance(options, dict) else None
    if not isinstance(marker, dict):
        return None
    return CarriedItem(message.args[0], marker.get("content_type"), marker.get("headers") or None)


def envelope_text(message: Any) -> str | None:
    """The envelope text inside a stand-in message's item, if it has one."""
    item = raw_item(message)
    if item is None:
        return None
    return unwrap(item.body, content_type=item.content_type, headers=item.headers).envelope


def _plain_message(body: bytes | str, queue_name: str) -> Message[Any] | None:
    """The Dramatiq message of the common item, read with one parse: a plain-JSON Dramatiq message
    carrying one envelope text (see :func:`taskbridge.wire.is_plain_dramatiq`) for an actor that is
    no job's old name. None for any other item, which :func:`read_item` reads in full."""
    if body[:1] not in (b"{", "{"):
        return None
    try:
        fields = parse_json(body)
    except (ValueError, RecursionError):
        return None
    if not is_plain_dramatiq(fields) or is_legacy(fields["actor_name"], fields["args"], fields["kwargs"]):
        return None
    if fields["queue_name"] != queue_name:
        # Dramatiq acknowledges through the consumer of message.queue_name: it must be this queue.
        fields["queue_name"] = queue_name
    return Message(**fields)


def _decoded(body: bytes | str | dict[str, Any]) -> Message[Any] | None:
    # unwrap has checked every field; this only builds the Message (from the fields unwrap parsed,
    # else from the item's plain or base64 JSON).
    try:
        if isinstance(body, dict):
            return Message(**body)
        text = body.encode() if isinstance(body, str) else body
        if text[:1] != b"{":
            text = base64.b64decode(text, validate=True)
        fields = json.loads(text)
        return Message(**fields)
    except (binascii.Error, ValueError, TypeError):
        return None
