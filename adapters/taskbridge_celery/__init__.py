"""taskbridge's Celery engine: ``TASKBRIDGE_ENGINE=celery`` on redis://, amqp:// or sqs://."""

from .engine import CeleryEngine
from .settings import CelerySettings

__all__ = ["CeleryEngine", "CelerySettings"]
