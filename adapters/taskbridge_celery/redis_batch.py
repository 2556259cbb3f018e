"""A batch for Redis written as kombu's Redis transport stores each message, in one pipeline.

kombu's ``Producer.publish`` builds, encodes and augments one message object per call, several
times the cost of the ``LPUSH`` itself; the messages of one ``enqueue_many`` differ only in ids and
arguments, so their stored JSON is rendered here directly, in the shape of kombu's virtual
transport (``Channel.prepare_message`` then ``_inplace_augment_message``: base64 body, delivery
info, a fresh delivery tag). ``tests/adapters/celery/test_celery_publisher.py`` compares it with kombu's own.
"""

from __future__ import annotations

import json
import os
import re
from binascii import b2a_base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskbridge import Envelope
from taskbridge.envelope import EnvelopeBatch

from .wire import BODY_HEAD, BODY_TAIL, CONTENT_ENCODING, CONTENT_TYPE, message_headers, task_id_for

if TYPE_CHECKING:
    from taskbridge.redis_inflight import InFlight

_TASK_ID, _BODY, _TAG = "\ue000task\ue000", "\ue000body\ue000", "\ue000tag\ue000"
_MARK = re.compile("(\ue000(?:task|body|tag)\ue000)")
_ORDER = [_BODY, _TASK_ID, _TASK_ID, _TASK_ID, _TAG]
"""Where the markers are in :func:`_stored_json`'s text: its keys are always in the same order."""
_VARIANT = "89ab"
"""The variant digit of a version-4 UUID."""


class _Template:
    """The stored JSON of one job's messages on one queue, in the pieces between what differs."""

    def __init__(self, envelope: Envelope, eta: float | None) -> None:
        parts = _MARK.split(_stored_json(envelope, eta))
        if parts[1::2] != _ORDER:
            raise AssertionError(f"unexpected layout of a stored message: {parts[1::2]}")
        self.parts: tuple[str, str, str, str, str, str] = tuple(parts[0::2])  # type: ignore[assignment]

    def render_all(self, task_ids: Sequence[str], bodies: Sequence[str], tags: Sequence[str]) -> list[str]:
        """The stored JSON of each message, with its task id, Celery body and delivery tag."""
        p0, p1, p2, p3, p4, p5 = self.parts
        encoding = CONTENT_ENCODING
        return [
            f"{p0}{b2a_base64(body.encode(encoding), newline=False).decode('ascii')}"
            f"{p1}{task_id}{p2}{task_id}{p3}{task_id}{p4}{tag}{p5}"
            for task_id, body, tag in zip(task_ids, bodies, tags, strict=True)
        ]


def _stored_json(envelope: Envelope, eta: float | None) -> str:
    """The stored JSON of ``envelope``'s message with a marker where each message differs."""
    headers = message_headers(envelope, _TASK_ID, eta)
    message: dict[str, Any] = {
        "body": _BODY,
        "content-encoding": CONTENT_ENCODING,
        "content-type": CONTENT_TYPE,
        "headers": headers,
        "properties": {
            "correlation_id": _TASK_ID,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": envelope.queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": _TAG,
        },
    }
    # ensure_ascii=False keeps the markers (private-use characters) as they are, to be found and replaced.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def delivery_tags(count: int) -> list[str]:
    """``count`` delivery tags shaped as kombu's (``str(uuid.uuid4())``): 74 random bits shared by
    the batch, then 48 bits that start at random and count up, so no two tags of a batch are alike."""
    seed = os.urandom(16).hex()
    head = f"{seed[:8]}-{seed[8:12]}-4{seed[13:16]}-{_VARIANT[int(seed[16], 16) & 3]}{seed[17:20]}-"
    start = int(seed[20:], 16) % (0x1_0000_0000_0000 - count)  # counting up stays within 12 digits
    return list(map(f"{head}%012x".__mod__, range(start, start + count)))


def stored_messages(envelopes: Sequence[Envelope], eta: float | None) -> list[tuple[str, list[str]]]:
    """Runs of consecutive messages to one queue: ``(queue, stored JSON of each)``, as kombu's Redis
    channel would ``LPUSH`` them, in order."""
    if not envelopes:
        return []
    tags = delivery_tags(len(envelopes))
    if isinstance(envelopes, EnvelopeBatch):
        # One job, one queue, attempt 1, ids that are task ids: one template, no Envelope objects.
        bodies = envelopes.wrapped_texts(BODY_HEAD, BODY_TAIL)
        return [(envelopes.queue, _Template(envelopes[0], eta).render_all(envelopes.ids, bodies, tags))]
    runs: list[tuple[str, list[str]]] = []
    templates: dict[tuple[str, str, int], _Template] = {}
    for envelope, tag in zip(envelopes, tags, strict=True):
        key = (envelope.job, envelope.queue, envelope.attempt)
        template = templates.get(key)
        if template is None:
            template = templates[key] = _Template(envelope, eta)
        if not runs or runs[-1][0] != envelope.queue:
            runs.append((envelope.queue, []))
        body = f"{BODY_HEAD}{envelope.encode()}{BODY_TAIL}"
        runs[-1][1].extend(template.render_all([task_id_for(envelope.id)], [body], [tag]))
    return runs


def commands(envelopes: Sequence[Envelope], eta: float | None, key_prefix: str) -> list[tuple[str, ...]]:
    """The ``LPUSH`` commands that store the batch as kombu's Redis channel would, in order, keys under
    kombu's ``global_keyprefix``; several in one ``MULTI`` block, so a write cut short stores none."""
    from taskbridge.redis_inflight import pieces  # imports redis-py: installed with the redis extra only

    pushes: list[tuple[str, ...]] = [
        ("LPUSH", key_prefix + queue, *piece)
        for queue, texts in stored_messages(envelopes, eta)
        for piece in pieces(texts, len)
    ]
    return [("MULTI",), *pushes, ("EXEC",)] if len(pushes) > 1 else pushes


def start_push(channel: Any, envelopes: Sequence[Envelope], eta: float | None) -> InFlight:
    """Write the batch's ``LPUSH`` commands through ``channel``'s client without waiting for Redis."""
    from taskbridge.redis_inflight import InFlight  # imports redis-py: installed with the redis extra only

    client = channel.client
    return InFlight(client, commands(envelopes, eta, getattr(client, "global_keyprefix", "")))
