"""Queue items of kombu's virtual transports (Redis lists, SQS bodies) turned into kombu messages.

kombu parses each item itself and trusts its shape: an item that is not a kombu message stops a
Celery worker on Redis, or loses its queue on SQS. :func:`kombu_payload` is called instead of
kombu's parser, with the item and the queue it was read from, and always returns a payload kombu
can read: the item itself when it is a well-formed kombu message, or else a wrapper whose body is
the item's exact bytes (marked with :data:`ITEM_HEADER`), which the consumer hands to the runner.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
from typing import Any

from kombu.utils.json import loads

from taskbridge.wire import RAW_ITEM_HEADER

ITEM_HEADER = RAW_ITEM_HEADER
"""Header of a wrapper whose body is an item, exactly as the queue held it, that kombu cannot read."""

_TEXT_OR_NONE = (str, type(None))


class _Tags:
    """Delivery tags unique across every process sharing the broker: a random prefix per process
    and a counter (cheaper than a uuid4 per message)."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._numbers = itertools.count()

    def new(self) -> str:
        if self._pid != os.getpid():  # first use, or a forked child
            self._pid, self._prefix, self._numbers = os.getpid(), os.urandom(8).hex(), itertools.count()
        return f"{self._prefix}.{next(self._numbers)}"


_tags = _Tags()


def new_tag() -> str:
    """A delivery tag no other message of any process sharing the broker has."""
    return _tags.new()


def kombu_payload(item: bytes | str, queue: str, tag: str | None = None) -> dict[str, Any]:
    """The kombu message for ``item`` read from ``queue``, routed back to ``queue`` (so a restore
    or a dead letter goes to the queue it came from) under delivery tag ``tag`` (default: a fresh one)."""
    payload = _well_formed(item)
    if payload is None:
        return wrapped(item, queue, tag)
    properties = payload["properties"]
    delivery: dict[str, Any] = {"exchange": "", "routing_key": queue}
    if (properties.get("delivery_info") or {}).get("redelivered") is True:
        delivery["redelivered"] = True
    # A copied or hand-written item may repeat another's tag; kombu keys its unacked set by tag.
    properties.update(delivery_info=delivery, delivery_tag=tag or _tags.new())
    return payload


def wrapped(item: bytes | str, queue: str, tag: str | None = None) -> dict[str, Any]:
    """A kombu message carrying ``item``'s bytes as its body, for the consumer to dead-letter or run."""
    raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-type": "application/octet-stream",
        "content-encoding": "binary",
        "headers": {ITEM_HEADER: True},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": tag or _tags.new(),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
        },
    }


def _well_formed(item: bytes | str) -> dict[str, Any] | None:
    """The parsed item if kombu's virtual ``Message`` and its QoS can take it as it is, else None."""
    try:
        # kombu's own JSON reader, so an accepted item reads exactly as kombu would read it.
        payload = loads(item.decode("utf-8") if isinstance(item, bytes | bytearray) else item)
    except Exception:  # kombu's type hooks raise whatever the bad value makes them raise
        return None
    if not isinstance(payload, dict):
        return None
    properties = payload.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_info", {}), dict):
        return None
    headers = payload.get("headers")
    if not isinstance(headers, dict | None):
        return None
    body = payload.get("body")
    if not isinstance(body, str):
        return None
    if not all(isinstance(payload.get(key), _TEXT_OR_NONE) for key in ("content-type", "content-encoding")):
        return None
    encoding = properties.get("body_encoding")
    if encoding == "base64":
        try:
            base64.b64decode(body)  # as kombu decodes it: only what makes kombu raise is refused
        except (binascii.Error, ValueError):
            return None
    elif encoding not in (None, "utf-8"):
        return None
    return payload
