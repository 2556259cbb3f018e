"""Settings only the Celery adapter reads (environment variables ``TASKBRIDGE_CELERY_*``)."""

from __future__ import annotations

import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskbridge import config_check
from taskbridge.errors import ConfigurationError

PREFIX = "TASKBRIDGE_CELERY_"


class CelerySettings(BaseSettings):
    """Celery-specific knobs; everything shared with other engines lives in taskbridge's Settings."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    delay_margin: float | None = Field(
        default=None,
        ge=0,
        description=(
            "seconds kept between the longest countdown handed to Celery and the time the broker "
            "redelivers an unacknowledged message (Redis/SQS visibility timeout, RabbitMQ "
            "consumer_timeout); it must cover queueing plus the job's run time. Default: half of "
            "that time, at most 900"
        ),
    )
    amqp_consumer_timeout: float = Field(
        default=1800.0, gt=0, description="RabbitMQ's consumer_timeout in seconds (the broker's default is 1800)"
    )
    amqp_confirm_publish: bool = Field(
        default=True,
        description=(
            "RabbitMQ: a publish returns only once the broker has stored the message (publisher "
            "confirms; a batch is one transaction, one round trip). Off: faster single enqueues, "
            "but a message the broker drops or refuses is lost without an error"
        ),
    )
    sqs_wait_time_seconds: int = Field(
        default=10, ge=0, le=20, description="SQS long-polling wait of the worker's ReceiveMessage calls"
    )
    sqs_polling_interval: float = Field(
        default=0.02,
        ge=0,
        description=(
            "how often the SQS worker looks again when it may poll; while its prefetch window is "
            "full this is only a timer, and an empty poll already waits sqs_wait_time_seconds at "
            "SQS, so a small value costs no extra requests (kombu's 1 s caps a worker at ~2 jobs/s)"
        ),
    )
    redis_key_prefix: str | None = Field(
        default=None,
        description=(
            "prefix of every Redis key the Celery engine uses (default '<namespace>:celery:'); '' uses "
            "kombu's bare keys, shared with plain Celery producers and workers during a migration"
        ),
    )
    task_events: bool = Field(
        default=False,
        description=(
            "workers send Celery task events (task-received, -started, -succeeded, -failed, -retried) "
            "and heartbeats, for Flower and `celery events`; Redis and RabbitMQ only"
        ),
    )
    loglevel: str = Field(default="INFO", description="log level of the Celery worker")
    hostname: str | None = Field(default=None, description="Celery node name (default taskbridge-<pid>@<host>)")


def load_celery_settings(*, strict: bool = False) -> CelerySettings:
    """Read the ``TASKBRIDGE_CELERY_*`` settings; a bad value raises ConfigurationError naming it, an
    unknown variable is a warning naming the closest one (an error when ``strict``)."""
    unknown = config_check.unknown_variables(os.environ, CelerySettings.model_fields, prefix=PREFIX)
    try:
        options = CelerySettings()
    except ValidationError as exc:
        problems = [
            f"{PREFIX}{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}" for error in exc.errors()
        ]
        raise ConfigurationError("invalid Celery engine settings:\n  " + "\n  ".join(problems + unknown)) from None
    config_check.report(unknown, strict=strict)
    return options
