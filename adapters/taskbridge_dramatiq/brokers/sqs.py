"""dramatiq-sqs's SQSBroker with guarded consumers, batched sends, whole-second delays rounded up,
depth and purge; a send that fails raises PublishError."""

from __future__ import annotations

import logging
import math
import time
from base64 import b64encode
from collections.abc import Container, Sequence
from typing import Any

import botocore.exceptions
import dramatiq
from dramatiq import Message
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq_sqs import SQSBroker
from dramatiq_sqs.broker import SQSConsumer, _SQSMessage

from taskbridge.envelope import EnvelopeBatch
from taskbridge.errors import EnqueueError, PublishError
from taskbridge.layout import SQS_RETENTION_SECONDS, sqs_queue_name
from taskbridge.transports import SQS_BATCH, SQS_MAX_DELAY, SQS_MAX_MESSAGE_BYTES

from ..outage import connected
from .common import RoutesUnknownActors, legacy_queue
from .guard import read_item

MAX_DELAY_SECONDS = int(SQS_MAX_DELAY)
MAX_BODY_BYTES = SQS_MAX_MESSAGE_BYTES


log = logging.getLogger("taskbridge.dramatiq")

_TRANSPORT_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
# Errors after which the same request may succeed once the endpoint is reachable again; a refusal
# (ClientError, e.g. an expired receipt handle) would fail forever if retried.
_UNREACHABLE = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


class GuardedSQSConsumer(SQSConsumer):  # type: ignore[misc]
    """dramatiq-sqs's consumer whose every received body goes through :func:`guard.read_item`: a
    body it cannot decode is dead-lettered and deleted instead of coming back after every visibility
    timeout."""

    def __init__(self, broker: TaskbridgeSQSBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(
            broker.queues[queue_name],
            prefetch,
            timeout,
            dead_letter_queue=None,
            visibility_timeout=broker.visibility_timeout,
        )
        self.queue_name = queue_name
        self.actors: Container[str] = broker.actors

    def ack(self, message: _SQSMessage) -> None:
        try:
            super().ack(message)
        except _UNREACHABLE as exc:  # Dramatiq retries an acknowledgement that raised ConnectionClosed
            raise ConnectionClosed(exc) from None
        except botocore.exceptions.ClientError as exc:
            # A refusal (an expired or unknown receipt handle) fails again if retried; raised, it would
            # stop this consumer and hand every message it holds back after the visibility timeout.
            self.message_refc -= 1
            log.warning(
                "SQS refused to delete finished message %s of %s (%s); it will be delivered and run again "
                "after the visibility timeout",
                message.message_id,
                self.queue_name,
                exc.response.get("Error", {}).get("Code"),
            )

    def close(self) -> None:
        try:
            super().close()
        except _TRANSPORT_ERRORS as exc:  # Dramatiq's consumer thread survives only a ConnectionClosed here
            raise ConnectionClosed(exc) from None

    def __next__(self) -> _SQSMessage | None:
        # dramatiq-sqs decodes inside the method that receives, so the receive is repeated here.
        if not self.messages and self.message_refc < self.prefetch:
            options: dict[str, Any] = {"MaxNumberOfMessages": self.prefetch, "WaitTimeSeconds": self.wait_time_seconds}
            if self.visibility_timeout is not None:
                options["VisibilityTimeout"] = self.visibility_timeout
            try:
                received = self.queue.receive_messages(**options)
            except _TRANSPORT_ERRORS as exc:
                raise ConnectionClosed(exc) from None
            connected()
            for sqs_message in received:
                message = read_item(sqs_message.body, self.queue_name, known_actors=self.actors)
                self.messages.append(_SQSMessage(sqs_message, message))
                self.message_refc += 1
        if self.messages:
            self.misses = 0
            return self.messages.popleft()  # type: ignore[no-any-return]
        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.wait_time_seconds * 1000 or 1000)
        time.sleep(backoff_ms / 1000)
        return None


class TaskbridgeSQSBroker(RoutesUnknownActors, SQSBroker):
    """SQSBroker that sends up to ten messages per request, never floors a delay, and names and
    creates its queues as the shared layout says (``<namespace>-<queue>``, as the Celery engine)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._legacy_names: dict[str, str] = {}

    def declare_legacy_queues(self, queues: Sequence[str], namespace: str) -> dict[str, str]:
        """Declare, for each of ``queues`` whose queue as plain dramatiq-sqs names it under ``namespace``
        (``<namespace>_<queue>``, or ``<queue>`` without one) exists, a Dramatiq queue reading it, so a
        worker runs the messages unmigrated producers still send there. Returns the SQS name of each
        Dramatiq queue declared; a queue that does not exist is never created."""
        declared: dict[str, str] = {}
        for queue in queues:
            name = f"{namespace}_{queue}" if namespace else queue
            if name == self._sqs_name(queue) or self._url_of(name) is None:
                continue
            own = legacy_queue(queue)
            self._legacy_names[own] = name
            self.declare_queue(own)
            declared[own] = name
        return declared

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

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 20_000) -> GuardedSQSConsumer:
        self._ensure_queue(queue_name)
        return GuardedSQSConsumer(self, queue_name, prefetch, timeout)

    def _queue_url(self, queue: str) -> str:
        if queue not in self.queue_names:
            self.declare_queue(queue)
        self._ensure_queue(queue)
        return str(self.queues[queue].url)

    def sqs_name(self, queue: str) -> str:
        """The name of the SQS queue holding the Dramatiq queue ``queue``."""
        return self._sqs_name(queue)

    def _sqs_name(self, queue: str) -> str:
        if queue in self._legacy_names:
            return self._legacy_names[queue]
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
            try:
                url = self._queue_url(queue)
            except _TRANSPORT_ERRORS as exc:
                raise PublishError(f"SQS queue {queue!r} cannot be reached: {exc}") from exc
            for batch in SQS_BATCH.split(items, lambda item: len(item[1])):
                self._send(client, url, batch, delay_seconds)

    def publish_batch(self, batch: EnvelopeBatch, delay_ms: int | None) -> None:
        from ..actors import to_message

        self.publish([to_message(envelope) for envelope in batch], delay_ms)

    def _send(self, client: Any, url: str, batch: list[tuple[Message[Any], str]], delay: int) -> None:
        for message, _ in batch:
            self.emit_before("enqueue", message, delay * 1000)
        entries = [{"Id": str(i), "MessageBody": body, "DelaySeconds": delay} for i, (_, body) in enumerate(batch)]
        try:
            response = client.send_message_batch(QueueUrl=url, Entries=entries)
        except _TRANSPORT_ERRORS as exc:
            raise PublishError(f"SQS did not store a batch of {len(batch)} messages: {exc}") from exc
        failed = response.get("Failed") or []
        if failed:
            raise PublishError(f"SQS refused {len(failed)} of {len(batch)} messages: {failed[0]}")
        for message, _ in batch:
            self.emit_after("enqueue", message, delay * 1000)

    def _existing_url(self, queue: str) -> str | None:
        return self._url_of(self._sqs_name(queue))

    def _url_of(self, name: str) -> str | None:
        client = self.sqs.meta.client
        try:
            return str(client.get_queue_url(QueueName=name)["QueueUrl"])
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

    def delete_queue(self, queue: str) -> None:
        """DeleteQueue; a later enqueue creates the queue again."""
        url = self._existing_url(queue)
        if url is not None:
            self.sqs.meta.client.delete_queue(QueueUrl=url)
        self.queues.pop(queue, None)

    def reap(self, queue: str) -> None:
        """SQS delivers an unacknowledged message again once its visibility timeout passes."""

    def requeue_now(self, consumer: Any, message: Any) -> None:
        consumer.requeue([message])
