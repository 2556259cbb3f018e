"""A batch for Redis written as kombu's Redis transport stores each message, in one pipeline.

kombu's ``Producer.publish`` builds, encodes and augments one message object per call, several
times the cost of the ``LPUSH`` itself; the messages of one ``enqueue_many`` differ only in ids and
arguments, so their stored JSON is rendered here directly, in the shape of kombu's virtual
transport (``Channel.prepare_message`` then ``_inplace_augment_message``: base64 body, delivery
info, a fresh delivery tag). ``tests/test_celery_publisher.py`` compares it with kombu's own.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from taskbridge import Envelope
from taskbridge.envelope import envelope_texts

from .wire import CONTENT_ENCODING, CONTENT_TYPE, message_body, message_headers, new_task_id

PIPELINE_SIZE = 1000
"""Messages sent in one pipeline round trip."""

_encode = json.JSONEncoder(separators=(",", ":")).encode


def stored_messages(envelopes: Sequence[Envelope], eta: float | None) -> Iterator[tuple[str, str]]:
    """``(queue, stored JSON)`` for each envelope, as kombu's Redis channel would ``LPUSH`` it."""
    for envelope, text in zip(envelopes, envelope_texts(envelopes), strict=True):
        task_id = new_task_id()
        message: dict[str, Any] = {
            "body": base64.b64encode(message_body(text)).decode("ascii"),
            "content-encoding": CONTENT_ENCODING,
            "content-type": CONTENT_TYPE,
            "headers": message_headers(envelope, task_id, eta),
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": envelope.queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        yield envelope.queue, _encode(message)


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
