"""The queue names each transport accepts, checked before a name reaches the broker."""

from __future__ import annotations

import re

from .config import Settings
from .layout import sqs_queue_name

SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
"""SQS queue names: letters, digits, '-' and '_', at most 80 characters."""


def queue_name_problem(queue: str, settings: Settings) -> str | None:
    """Why the configured transport cannot hold ``queue`` (and its dead-letter queue), or None."""
    if settings.broker_scheme != "sqs":
        return None
    for name in (queue, queue + settings.dead_letter_suffix):
        full = sqs_queue_name(settings.namespace, name)
        if not SQS_NAME.match(full):
            return (
                f"queue {queue!r} cannot be an SQS queue: its name there, {full!r}, may hold only letters, "
                "digits, '-' and '_', at most 80 characters (TASKBRIDGE_NAMESPACE and the queue name together)"
            )
    return None
