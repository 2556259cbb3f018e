"""Settings only the Dramatiq adapter reads (TASKBRIDGE_DRAMATIQ_*); the core settings stay in taskbridge."""

from __future__ import annotations

import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskbridge import config_check
from taskbridge.errors import ConfigurationError

PREFIX = "TASKBRIDGE_DRAMATIQ_"


class DramatiqSettings(BaseSettings):
    """Tuning of the Dramatiq adapter. Every field has a safe default; set them through the environment."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid")

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


def load_dramatiq_settings(*, strict: bool = False) -> DramatiqSettings:
    """Read the ``TASKBRIDGE_DRAMATIQ_*`` settings; a bad value raises ConfigurationError naming it, an
    unknown variable is a warning naming the closest one (an error when ``strict``)."""
    unknown = config_check.unknown_variables(os.environ, DramatiqSettings.model_fields, prefix=PREFIX)
    try:
        options = DramatiqSettings()
    except ValidationError as exc:
        problems = [
            f"{PREFIX}{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}" for error in exc.errors()
        ]
        raise ConfigurationError("invalid Dramatiq engine settings:\n  " + "\n  ".join(problems + unknown)) from None
    config_check.report(unknown, strict=strict)
    return options
