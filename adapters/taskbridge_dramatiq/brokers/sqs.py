"""dramatiq-sqs's SQSBroker with batched sends, whole-second delays rounded up, depth and purge."""

from __future__ import annotations

import math
from base64 import b64encode
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq_sqs import SQSBroker

from taskbridge.errors import EnqueueError
from taskbridge.layout import SQS_RETENTION_SECONDS, sqs_queue_name

from .common import RoutesUnknownActors

MAX_DELAY_SECONDS = 900
MAX_BODY_BYTES = 256 * 1024
"""SQS's classic limit for one message and for one SendMessageBatch request."""
_BATCH = 10


class TaskbridgeSQSBroker(RoutesUnknownActors, SQSBroker):
    """SQSBroker that sends up to ten messages per request, never floors a delay, and names and
    creates its queues as the shared layout says (``<namespace>-<queue>``, as the Celery engine)."""

    def _ensure_queue(self, queue_name: str) -> None:
        # dramatiq-sqs names a queue "<namespace>_<queue>" and creates it with its own attributes;
        # this is its lookup with the layout's name and attributes (dramatiq-sqs has no hook for them).
        if queue_name not in self.queue_names:
            raise dramatiq.QueueNotFound(queue_name)
        if queue_name in self.queues:
            return
        client = self.sqs.meta.client
        name = self._sqs_name(queue_name)
        try:
            self.queues[queue_name] = self.sqs.get_queue_by_name(QueueName=name)
        except client.exceptions.QueueDoesNotExist:
            attributes = {
                "VisibilityTimeout": str(self.visibility_timeout),
                "MessageRetentionPeriod": str(SQS_RETENTION_SECONDS),
            }
            self.queues[queue_name] = self.sqs.create_queue(QueueName=name, Attributes=attributes)

    def _queue_url(self, queue: str) -> str:
        if queue not in self.queue_names:
            self.declare_queue(queue)
        self._ensure_queue(queue)
        return str(self.queues[queue].url)

    def _sqs_name(self, queue: str) -> str:
        return sqs_queue_name(self.namespace or "", queue) if self.namespace else queue

    def publish(self, messages: Sequence[Message[Any]], delay_ms: int | None) -> None:
        delay_seconds = min(math.ceil((delay_ms or 0) / 1000), MAX_DELAY_SECONDS)
        client = self.sqs.meta.client
        by_queue: dict[str, list[tuple[Message[Any], str]]] = {}
        for message in messages:
            body = b64encode(message.encode()).decode()
            if len(body) > MAX_BODY_BYTES:
                raise EnqueueError(
                    f"job {message.actor_name!r}: the SQS message would be {len(body)} bytes, over SQS's "
                    f"{MAX_BODY_BYTES}-byte limit; pass a reference (an id, a URL) instead of the data"
                )
            by_queue.setdefault(message.queue_name, []).append((message, body))
        for queue, items in by_queue.items():
            url = self._queue_url(queue)
            batch: list[tuple[Message[Any], str]] = []
            size = 0
            for item in items:
                if batch and (len(batch) == _BATCH or size + len(item[1]) > MAX_BODY_BYTES):
                    self._send(client, url, batch, delay_seconds)
                    batch, size = [], 0
                batch.append(item)
                size += len(item[1])
            if batch:
                self._send(client, url, batch, delay_seconds)

    def _send(self, client: Any, url: str, batch: list[tuple[Message[Any], str]], delay: int) -> None:
        for message, _ in batch:
            self.emit_before("enqueue", message, delay * 1000)
        response = client.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(index), "MessageBody": body, "DelaySeconds": delay}
                for index, (_, body) in enumerate(batch)
            ],
        )
        failed = response.get("Failed") or []
        if failed:
            raise RuntimeError(f"SQS refused {len(failed)} of {len(batch)} messages: {failed[0]}")
        for message, _ in batch:
            self.emit_after("enqueue", message, delay * 1000)

    def _existing_url(self, queue: str) -> str | None:
        client = self.sqs.meta.client
        try:
            return str(client.get_queue_url(QueueName=self._sqs_name(queue))["QueueUrl"])
        except client.exceptions.QueueDoesNotExist:
            return None

    def queue_depth(self, queue: str) -> int:
        url = self._existing_url(queue)
        if url is None:
            return 0
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
        attributes = self.sqs.meta.client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    def holdings(self, queue: str) -> dict[str, int]:
        return {self._sqs_name(queue): self.queue_depth(queue)}

    def purge_queue(self, queue: str) -> int:
        dropped = self.queue_depth(queue)
        url = self._existing_url(queue)
        if url is not None:
            self.sqs.meta.client.purge_queue(QueueUrl=url)
        return dropped

    def reap(self, queue: str) -> None:
        """SQS delivers an unacknowledged message again once its visibility timeout passes."""

    def requeue_now(self, consumer: Any, message: Any) -> None:
        consumer.requeue([message])
