"""The queue layout every engine respects on each transport (names, separators, declaration arguments).

Two engines pointed at one broker must never collide, so the rules live here, once, and each
adapter builds its names and declarations from them. docs/transports.md describes the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings

SQS_RETENTION_SECONDS = 14 * 24 * 3600
"""How long an SQS queue keeps a message; SQS's maximum, set by whichever engine creates the queue."""


def dead_letter_queue(queue: str, settings: Settings | None = None) -> str:
    """Where ``queue``'s messages that cannot run are kept: ``<queue><dead_letter_suffix>``."""
    if settings is None:
        # Names sit below the settings (config reads the transport rules, which use these names).
        from .config import get_settings

        settings = get_settings()
    return queue + settings.dead_letter_suffix


def amqp_queue_arguments(queue: str) -> dict[str, Any]:
    """The ``x-`` arguments of a RabbitMQ queue (main or dead-letter queue) under every engine.

    They are exactly those Dramatiq's ``RabbitmqBroker`` declares (no priorities): a message the
    broker dead-letters goes to Dramatiq's ``<queue>.XQ``. Declared with the same arguments and
    ``durable=True`` by every engine, a queue can be declared by either engine first, any number of
    times; RabbitMQ refuses a declaration whose arguments differ (PRECONDITION_FAILED).
    """
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}.XQ"}


def sqs_queue_name(namespace: str, queue: str) -> str:
    """The SQS queue of ``queue`` under every engine: ``<namespace>-<queue>`` (kombu's name with the
    ``<namespace>-`` prefix). Names SQS cannot hold are refused before they reach it
    (taskbridge.transports), so no engine's character replacement ever applies."""
    return f"{namespace}-{queue}"


def redis_celery_prefix(namespace: str) -> str:
    """The prefix of every Redis key the Celery engine writes: ``<namespace>:celery:``.

    Dramatiq's keys are ``<namespace>:<queue>...``; a queue name cannot contain ':', so the two
    engines' keys never meet, and neither meets another namespace's.
    """
    return f"{namespace}:celery:"
