"""The settings sections of the bundled engines: ``[tool.taskbridge.celery]`` / ``TASKBRIDGE_CELERY_*``
and ``[tool.taskbridge.dramatiq]`` / ``TASKBRIDGE_DRAMATIQ_*``, nested in :class:`taskbridge.config.Settings`
and read, validated and reported with it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CelerySettings(BaseModel):
    """Celery-specific knobs; everything shared with other engines lives in taskbridge's Settings."""

    # Unknown keys are reported (a warning naming the closest key, an error when strict) by
    # taskbridge.config_check, like unknown top-level settings.
    model_config = ConfigDict(extra="ignore")

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


class DramatiqSettings(BaseModel):
    """Tuning of the Dramatiq adapter; every field has a safe default."""

    model_config = ConfigDict(extra="ignore")

    worker_timeout_ms: int = Field(
        default=100,
        ge=10,
        le=20_000,
        description="how long an idle consumer waits before it polls again; Dramatiq's own default "
        "(1000 ms) adds up to a second of latency on Redis at light load",
    )
    confirm_delivery: bool = Field(
        default=True,
        description="RabbitMQ: producers wait for the broker to confirm each publish; workers always do, "
        "because a retry or dead letter must be stored before the original message is acknowledged",
    )
    redis_heartbeat_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Redis: seconds without a heartbeat before a worker's unacknowledged messages are "
        "delivered again; default: TASKBRIDGE_VISIBILITY_TIMEOUT, at most 60",
    )
    shutdown_timeout: float = Field(
        default=600.0, gt=0, description="seconds a stopping or recycled worker process waits for running jobs"
    )
    hard_timeout_grace: float = Field(
        default=30.0,
        ge=0,
        description="after a hard timeout, seconds the other jobs of that process get to finish before "
        "the process is replaced (jobs still running then are delivered again)",
    )
    respawn_delay: float = Field(default=1.0, ge=0, description="seconds before a crashed worker process is restarted")
    sqs_legacy_namespace: str | None = Field(
        default=None,
        description="SQS: the namespace plain dramatiq-sqs producers use (SQSBroker(namespace=...)); a worker "
        "also runs the messages in their queue '<namespace>_<queue>' ('<queue>' when empty) if it exists; "
        "default: TASKBRIDGE_NAMESPACE",
    )


SECTIONS: dict[str, type[BaseModel]] = {"celery": CelerySettings, "dramatiq": DramatiqSettings}
"""Nested sections of the settings by name: the key in the files, ``TASKBRIDGE_<NAME>_`` in the environment."""
