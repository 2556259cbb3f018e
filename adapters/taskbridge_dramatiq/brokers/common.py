"""What every taskbridge broker adds to Dramatiq's: unknown actors still reach the runner, batches, depth."""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol

from dramatiq import Actor, Message
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound

from taskbridge.envelope import EnvelopeBatch

UNKNOWN_JOB_ACTOR = "taskbridge.unknown_job"
"""Actor that receives messages naming no declared job, so the runner can dead-letter them."""

LEGACY_QUEUE_SUFFIX = ".legacy"
"""Suffix of the Dramatiq queue that reads a queue's messages where plain Dramatiq producers keep them
under another name (dramatiq-sqs's ``<namespace>_<queue>``); no taskbridge queue name holds a dot on SQS."""


def legacy_queue(queue: str) -> str:
    """The Dramatiq queue reading ``queue``'s messages from plain Dramatiq producers (see LEGACY_QUEUE_SUFFIX)."""
    return queue + LEGACY_QUEUE_SUFFIX


def taskbridge_queue(dramatiq_queue: str) -> str:
    """The taskbridge queue a Dramatiq queue serves: its delay-queue (``.DQ``, ``.XQ``) and legacy suffixes removed."""
    return q_name(dramatiq_queue).removesuffix(LEGACY_QUEUE_SUFFIX)


class RoutesUnknownActors:
    """Mixin: a message for an actor this worker does not know goes to the fallback actor instead of
    Dramatiq's own dead-letter queue, so the runner sees it and writes a taskbridge dead letter."""

    fallback_actor: Actor[..., Any] | None = None

    def get_actor(self, actor_name: str) -> Actor[..., Any]:
        try:
            return super().get_actor(actor_name)  # type: ignore[misc, no-any-return]
        except ActorNotFound:
            if self.fallback_actor is None:
                raise
            return self.fallback_actor


def message_bodies(batch: EnvelopeBatch, queue_name: str, options: Sequence[str]) -> list[bytes]:
    """The bytes ``Message.encode`` writes for the Dramatiq message carrying each envelope of ``batch``
    on ``queue_name``, ``options[i]`` being its options' JSON: rendered from the envelopes' texts, so a
    batch costs neither a Message object nor a JSON encoding per envelope."""
    quote = encode_basestring_ascii
    head = f'{{"queue_name":{quote(queue_name)},"actor_name":{quote(batch.job)},"args":['
    stamp = f',"message_timestamp":{int(batch.enqueued_at * 1000)}}}'
    return [
        f'{head}{text}],"kwargs":{{}},"options":{option},"message_id":"{message_id}"{stamp}'.encode()
        for text, option, message_id in zip(batch.quoted_texts(), options, batch.ids, strict=True)
    ]


class TaskbridgeBroker(Protocol):
    """The operations the engine needs beyond Dramatiq's Broker."""

    fallback_actor: Actor[..., Any] | None

    def publish(self, messages: Sequence[Message[Any]], delay_ms: int | None) -> None:
        """Enqueue ``messages`` (batched where the transport can), each delayed by ``delay_ms``."""

    def publish_batch(self, batch: EnvelopeBatch, delay_ms: int | None) -> None:
        """Enqueue the envelopes of ``batch`` as Dramatiq messages rendered from their texts."""

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue``, delayed ones included."""

    def purge_queue(self, queue: str) -> int:
        """Drop the waiting messages of ``queue``; how many were dropped."""

    def delete_queue(self, queue: str) -> None:
        """Remove ``queue`` and its companions from the broker, messages and all."""

    def holdings(self, queue: str) -> dict[str, int]:
        """Where on the broker ``queue``'s waiting messages are (key or queue name) and how many each holds."""

    def reap(self, queue: str) -> None:
        """Deliver again the unacknowledged messages of dead workers, where the transport needs asking."""

    def requeue_now(self, consumer: Any, message: Any) -> None:
        """Make one fetched, unacknowledged message deliverable again right away (best effort)."""
