"""A batch for Redis written as kombu's Redis transport stores each message, in one pipeline.

kombu's ``Producer.publish`` builds, encodes and augments one message object per call, several
times the cost of the ``LPUSH`` itself; the messages of one ``enqueue_many`` differ only in ids and
arguments, so their stored JSON is rendered here directly, in the shape of kombu's virtual
transport (``Channel.prepare_message`` then ``_inplace_augment_message``: base64 body, delivery
info, a fresh delivery tag). ``tests/test_celery_publisher.py`` compares it with kombu's own.
"""

from __future__ import annotations

import json
import operator
import os
import re
from binascii import b2a_base64
from collections.abc import Callable, Sequence
from typing import Any

from taskbridge import Envelope
from taskbridge.envelope import EnvelopeBatch

from .wire import BODY_TAIL, CONTENT_ENCODING, CONTENT_TYPE, message_headers, task_id_for

PIPELINE_SIZE = 1000
"""Messages sent in one pipeline round trip."""

_TASK_ID, _BODY, _TAG = "\ue000task\ue000", "\ue000body\ue000", "\ue000tag\ue000"
_MARKERS = (_TASK_ID, _BODY, _TAG)
_MARK = re.compile("(\ue000(?:task|body|tag)\ue000)")
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The variant digit of a version-4 UUID for a random hex digit."""


class _Template:
    """The stored JSON of one job's messages on one queue, with a ``%s`` where each message differs."""

    def __init__(self, envelope: Envelope, eta: float | None) -> None:
        parts = _MARK.split(_stored_json(envelope, eta))
        self._format = "".join(part.replace("%", "%%") if i % 2 == 0 else "%s" for i, part in enumerate(parts))
        pick = operator.itemgetter(*(_MARKERS.index(marker) for marker in parts[1::2]))
        self._pick: Callable[[tuple[str, str, str]], tuple[str, ...]] = pick

    def render(self, task_id: str, envelope_text: str, tag: str) -> str:
        """The stored JSON of the message with this task id, envelope and delivery tag."""
        body = b2a_base64(f"[[{envelope_text}]{BODY_TAIL}".encode(CONTENT_ENCODING), newline=False).decode("ascii")
        return self._format % self._pick((task_id, body, tag))


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
    """``count`` fresh delivery tags shaped as kombu's (``str(uuid.uuid4())``), from one read of the
    system's random source."""
    pool = os.urandom(16 * count).hex()
    tags = []
    for start in range(0, 32 * count, 32):
        h = pool[start : start + 32]
        tags.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return tags


def stored_messages(envelopes: Sequence[Envelope], eta: float | None) -> list[tuple[str, list[str]]]:
    """Runs of consecutive messages to one queue: ``(queue, stored JSON of each)``, as kombu's Redis
    channel would ``LPUSH`` them, in order."""
    if not envelopes:
        return []
    tags = delivery_tags(len(envelopes))
    if isinstance(envelopes, EnvelopeBatch):
        # One job, one queue, attempt 1, ids that are task ids: one template, no Envelope objects.
        render = _Template(envelopes[0], eta).render
        texts = [render(i, text, tag) for i, text, tag in zip(envelopes.ids, envelopes.texts, tags, strict=True)]
        return [(envelopes.queue, texts)]
    runs: list[tuple[str, list[str]]] = []
    templates: dict[tuple[str, str, int], _Template] = {}
    for envelope, tag in zip(envelopes, tags, strict=True):
        key = (envelope.job, envelope.queue, envelope.attempt)
        template = templates.get(key)
        if template is None:
            template = templates[key] = _Template(envelope, eta)
        if not runs or runs[-1][0] != envelope.queue:
            runs.append((envelope.queue, []))
        runs[-1][1].append(template.render(task_id_for(envelope.id), envelope.encode(), tag))
    return runs


def push(channel: Any, envelopes: Sequence[Envelope], eta: float | None) -> None:
    """``LPUSH`` the batch through ``channel``'s client (which adds kombu's ``global_keyprefix``),
    one transaction-free pipeline per :data:`PIPELINE_SIZE` messages, consecutive messages of one
    queue in one command."""
    pipe = channel.client.pipeline(transaction=False)
    pending = 0
    for queue, texts in stored_messages(envelopes, eta):
        for start in range(0, len(texts), PIPELINE_SIZE):
            part = texts[start : start + PIPELINE_SIZE]
            pipe.lpush(queue, *part)
            pending += len(part)
            if pending >= PIPELINE_SIZE:
                pipe.execute()
                pending = 0
    if len(pipe):
        pipe.execute()
