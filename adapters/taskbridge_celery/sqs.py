"""SQS: publishing with SendMessageBatch (10 per call) and DelaySeconds, depth and purge.

kombu's SQS channel sends one SendMessage per message and Celery turns a countdown into an ETA the
worker holds past the visibility timeout. This module builds the same kombu message through the
channel (so queue names, endpoint, credentials and queue creation stay kombu's) and sends batches
itself, with the delay as ``DelaySeconds`` so SQS holds the message, not the worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any, TypeVar

from kombu import Connection
from kombu.transport.SQS.exceptions import DoesNotExistQueueException
from kombu.utils.json import dumps

from taskbridge import Envelope
from taskbridge.errors import EnqueueError
from taskbridge.transports import SQS_BATCH, SQS_MAX_DELAY

from .broker import SQS_MAX_BODY
from .connection import ProcessConnection
from .wire import CONTENT_ENCODING, CONTENT_TYPE, message_body, message_headers, task_id_for

T = TypeVar("T")


class SqsQueues:
    """Publish, count and purge SQS queues named ``<namespace>-<queue>``."""

    def __init__(self, connection: ProcessConnection) -> None:
        self._connection = connection

    def publish(self, envelopes: Sequence[Envelope], delay: float) -> None:
        """Send ``envelopes`` in SendMessageBatch calls, invisible for ``delay`` (<= 900) seconds."""
        if not envelopes:
            return
        if delay > SQS_MAX_DELAY:
            raise ValueError(f"SQS holds a message at most {SQS_MAX_DELAY:g}s, asked for {delay:g}s")
        eta = time.time() + delay if delay > 0 else None
        # The fraction of a second left after the whole DelaySeconds is held by the worker (ETA).
        delay_seconds = math.floor(delay) if delay > 0 else 0

        def send(connection: Connection) -> None:
            channel: Any = connection.default_channel
            by_queue = groupby(envelopes, key=lambda e: e.queue)
            for name, group in by_queue:
                url = channel._new_queue(name)  # creates the queue as kombu's worker would
                client = channel.sqs(queue=channel.canonical_queue_name(name))
                bodies = [(e, _sqs_body(channel, e, eta)) for e in group]
                for chunk in SQS_BATCH.split(bodies, lambda item: len(item[1].encode())):
                    _send_batch(client, url, chunk, delay_seconds)

        self._connection.call(send)

    def depth(self, name: str) -> int:
        """Visible plus delayed messages (SQS only knows approximately)."""

        def count(channel: Any, client: Any, url: str) -> int:
            attributes = client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
            )["Attributes"]
            return sum(int(value) for value in attributes.values())

        return self._on_queue(name, count) or 0

    def purge(self, name: str) -> int:
        """PurgeQueue (AWS allows one per queue per minute); returns the count seen before it."""
        waiting = self.depth(name)
        self._on_queue(name, lambda channel, client, url: client.purge_queue(QueueUrl=url))
        return waiting

    def delete(self, name: str) -> None:
        """DeleteQueue, and kombu forgets the queue's URL (a later publish creates it again)."""

        def delete(channel: Any, client: Any, url: str) -> None:
            client.delete_queue(QueueUrl=url)
            channel._queue_cache.pop(channel.canonical_queue_name(name), None)

        self._on_queue(name, delete)

    def _on_queue(self, name: str, action: Callable[[Any, Any, str], T]) -> T | None:
        """``action(channel, client, url)`` on SQS queue ``name`` through kombu's channel (its
        names, endpoint and credentials); None, doing nothing, if the queue does not exist."""

        def call(connection: Connection) -> T | None:
            channel: Any = connection.default_channel
            try:
                url = channel._resolve_queue_url(name)
            except DoesNotExistQueueException:
                return None
            return action(channel, channel.sqs(queue=channel.canonical_queue_name(name)), url)

        return self._connection.call(call)


def _sqs_body(channel: Any, envelope: Envelope, eta: float | None) -> str:
    task_id = task_id_for(envelope.id)
    message = channel.prepare_message(
        message_body(envelope.encode()),
        0,
        CONTENT_TYPE,
        CONTENT_ENCODING,
        message_headers(envelope, task_id, eta),
        {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2},
    )
    channel._inplace_augment_message(message, "", envelope.queue)
    body: str = dumps(message)
    if len(body.encode()) > SQS_MAX_BODY:
        raise EnqueueError(
            f"job {envelope.job!r}: the SQS message would be {len(body.encode())} bytes, over SQS's "
            f"{SQS_MAX_BODY}-byte limit; pass a reference (an id, a URL) instead of the data"
        )
    return body


def _send_batch(client: Any, url: str, chunk: list[tuple[Envelope, str]], delay_seconds: int) -> None:
    entries = []
    for index, (_, body) in enumerate(chunk):
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": body}
        if delay_seconds:
            entry["DelaySeconds"] = delay_seconds
        entries.append(entry)
    for _ in range(3):
        failed = client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed") or []
        if not failed:
            return
        retry_ids = {f["Id"] for f in failed if not f.get("SenderFault")}
        faults = [f for f in failed if f.get("SenderFault")]
        if faults:
            index = int(faults[0]["Id"])
            raise EnqueueError(f"job {chunk[index][0].job!r}: SQS refused the message: {faults[0].get('Message')}")
        entries = [e for e in entries if e["Id"] in retry_ids]
    raise ConnectionError(f"SQS kept failing {len(entries)} messages of a batch to {url}")
