"""What every taskbridge broker adds to Dramatiq's: unknown actors still reach the runner, batches, depth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dramatiq import Actor, Message
from dramatiq.errors import ActorNotFound

UNKNOWN_JOB_ACTOR = "taskbridge.unknown_job"
"""Actor that receives messages naming no declared job, so the runner can dead-letter them."""


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


class TaskbridgeBroker(Protocol):
    """The operations the engine needs beyond Dramatiq's Broker."""

    fallback_actor: Actor[..., Any] | None

    def publish(self, messages: Sequence[Message[Any]], delay_ms: int | None) -> None:
        """Enqueue ``messages`` (batched where the transport can), each delayed by ``delay_ms``."""

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue``, delayed ones included."""

    def purge_queue(self, queue: str) -> int:
        """Drop the waiting messages of ``queue``; how many were dropped."""

    def holdings(self, queue: str) -> dict[str, int]:
        """Where on the broker ``queue``'s waiting messages are (key or queue name) and how many each holds."""

    def reap(self, queue: str) -> None:
        """Deliver again the unacknowledged messages of dead workers, where the transport needs asking."""

    def requeue_now(self, consumer: Any, message: Any) -> None:
        """Make one fetched, unacknowledged message deliverable again right away (best effort)."""
