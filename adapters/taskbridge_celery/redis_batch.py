"""A batch for Redis written as kombu's Redis transport stores each message, in one pipeline.

kombu's ``Producer.publish`` builds, encodes and augments one message object per call, several
times the cost of the ``LPUSH`` itself; the messages of one ``enqueue_many`` differ only in ids and
arguments, so their stored JSON is rendered here directly, in the shape of kombu's virtual
transport (``Channel.prepare_message`` then ``_inplace_augment_message``: base64 body, delivery
info, a fresh delivery tag). ``tests/adapters/celery/test_celery_publisher.py`` compares it with kombu's own.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from taskbridge import Envelope
from taskbridge.envelope import envelope_texts

from .wire import CONTENT_ENCODING, CONTENT_TYPE, message_body, message_headers, task_id_for

PIPELINE_SIZE = 1000
"""Messages sent in one pipeline round trip."""

_TASK_ID, _BODY, _TAG = "\ue000task\ue000", "\ue000body\ue000", "\ue000tag\ue000"
_MARK = re.compile("(\ue000(?:task|body|tag)\ue000)")


def stored_messages(envelopes: Sequence[Envelope], eta: float | None) -> Iterator[tuple[str, str]]:
    """``(queue, stored JSON)`` for each envelope, as kombu's Redis channel would ``LPUSH`` it."""
    templates: dict[tuple[str, str, int], list[str]] = {}
    for envelope, text in zip(envelopes, envelope_texts(envelopes), strict=True):
        key = (envelope.job, envelope.queue, envelope.attempt)
        parts = templates.get(key)
        if parts is None:
            parts = templates[key] = _MARK.split(_template(envelope, eta))
        values = {
            _TASK_ID: task_id_for(envelope.id),
            _BODY: base64.b64encode(message_body(text)).decode("ascii"),
            _TAG: str(uuid.uuid4()),
        }
        yield envelope.queue, "".join(values.get(part, part) for part in parts)


def _template(envelope: Envelope, eta: float | None) -> str:
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


def push(channel: Any, envelopes: Sequence[Envelope], eta: float | None) -> None:
    """``LPUSH`` the batch through ``channel``'s client (which adds kombu's ``global_keyprefix``),
    one transaction-free pipeline per :data:`PIPELINE_SIZE` messages, consecutive messages of one
    queue in one command."""
    pipe = channel.client.pipeline(transaction=False)
    pending = 0
    run: list[str] = []
    run_queue = ""
    for queue, text in stored_messages(envelopes, eta):
        if queue != run_queue and run:
            pipe.lpush(run_queue, *run)
            run = []
        run_queue = queue
        run.append(text)
        pending += 1
        if pending >= PIPELINE_SIZE:
            pipe.lpush(run_queue, *run)
            pipe.execute()
            run, pending = [], 0
    if run:
        pipe.lpush(run_queue, *run)
    if len(pipe):
        pipe.execute()
