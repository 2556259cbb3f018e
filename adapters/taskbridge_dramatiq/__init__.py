"""taskbridge on Dramatiq: ``TASKBRIDGE_ENGINE=dramatiq`` over Redis, RabbitMQ (pika) or SQS (dramatiq-sqs)."""

from .engine import DramatiqEngine
from .settings import DramatiqSettings

__all__ = ["DramatiqEngine", "DramatiqSettings"]
