"""Settings: environment variables (TASKBRIDGE_*), taskbridge.toml, or [tool.taskbridge] in pyproject.toml."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigurationError
from .units import parse_duration

_BROKER_SCHEMES = ("memory", "redis", "rediss", "amqp", "amqps", "pyamqp", "sqs")


class Settings(BaseSettings):
    """Every taskbridge setting. Environment variables win over taskbridge.toml, which wins over pyproject.toml."""

    model_config = SettingsConfigDict(
        env_prefix="TASKBRIDGE_",
        extra="forbid",
        toml_file="taskbridge.toml",
        pyproject_toml_table_header=("tool", "taskbridge"),
        validate_default=True,
    )

    engine: str = Field("memory", description="memory | celery | dramatiq, or any registered engine")
    broker_url: str = Field("memory://", description="memory:// redis:// amqp:// sqs://")
    coordination_url: str | None = Field(
        None, description="redis:// URL shared by all workers for locks, rate limits and uniqueness"
    )
    namespace: str = Field("taskbridge", description="prefix of coordination keys and SQS queue names")
    default_queue: str = "default"
    default_timeout: float | None = Field(300.0, description="timeout of jobs that set none")
    default_expires: float | None = Field(86400.0, description="expiry of jobs that set none")
    max_native_delay: float | None = Field(
        None, description="cap on delays handed to the transport; longer delays hop through the core"
    )
    inline_wait_max: float = Field(
        1.0, description="rate-limit and lock waits up to this long are slept in the worker, not republished"
    )
    lock_retry: float = Field(1.0, description="how long a job deferred by a busy lock waits before it tries again")
    enqueue_batch_size: int = Field(500, ge=1, le=100_000)
    dead_letter_suffix: str = Field("-dead", pattern=r"^[A-Za-z0-9_-]+$")
    visibility_timeout: float = Field(
        3600.0, description="Redis/SQS: seconds before an unacknowledged message is delivered again"
    )
    sqs_endpoint_url: str | None = None
    sqs_region: str = "us-east-1"
    worker_concurrency: int = Field(2, ge=1, description="parallel jobs per worker (Celery: prefork children)")
    worker_processes: int | None = Field(None, ge=1, description="Dramatiq: worker processes")
    worker_threads: int | None = Field(None, ge=1, description="Dramatiq: threads per worker process")
    worker_reload: bool = Field(False, description="restart the worker when job code changes (development)")
    worker_max_memory_mb: int | None = Field(None, ge=1)
    prefetch: int = Field(1, ge=1)
    metrics_port: int | None = None
    sentry_dsn: str | None = Field(None, description="report job exceptions to Sentry (default: SENTRY_DSN)")
    track_jobs: bool = Field(False, description="keep a status record of every job, not only of jobs with result_ttl")
    track_ttl: float = Field(3600.0, description="how long a finished job's record is kept (jobs without result_ttl)")
    result_ttl: float | None = Field(None, description="keep every job's return value this long (or per job)")

    @field_validator(
        "default_timeout",
        "default_expires",
        "max_native_delay",
        "inline_wait_max",
        "lock_retry",
        "visibility_timeout",
        "track_ttl",
        "result_ttl",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any, info: Any) -> float | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            if info.field_name in ("inline_wait_max", "lock_retry", "visibility_timeout", "track_ttl"):
                raise ValueError("must be a duration")
            return None
        seconds = parse_duration(value, what=info.field_name)
        if seconds == 0 and info.field_name != "inline_wait_max":
            required = ("lock_retry", "visibility_timeout", "track_ttl")
            hint = "" if info.field_name in required else " (or 'none' for no limit)"
            raise ValueError(f"must be greater than zero{hint}")
        return seconds

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in _BROKER_SCHEMES:
            raise ValueError(f"unsupported scheme {scheme!r}; use one of {', '.join(_BROKER_SCHEMES)}")
        return value

    @field_validator("coordination_url")
    @classmethod
    def _coordination(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("memory", "redis", "rediss", "unix"):
            raise ValueError("must be memory:// or a redis:// URL")
        return value

    @model_validator(mode="after")
    def _engine_and_broker(self) -> Settings:
        scheme = urlsplit(self.broker_url).scheme
        if self.engine != "memory" and scheme == "memory":
            raise ValueError(
                f"engine {self.engine!r} needs a broker: set TASKBRIDGE_BROKER_URL to a redis://, amqp:// or sqs:// URL"
            )
        return self

    @property
    def broker_scheme(self) -> str:
        return urlsplit(self.broker_url).scheme

    @property
    def effective_coordination_url(self) -> str:
        """The coordination store: the configured one, else the Redis broker, else in-process memory."""
        if self.coordination_url:
            return self.coordination_url
        if self.broker_scheme in ("redis", "rediss"):
            return self.broker_url
        return "memory://"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            PyprojectTomlConfigSettingsSource(settings_cls, Path("pyproject.toml")),
        )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings; a bad value raises :class:`ConfigurationError` naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            env = f"TASKBRIDGE_{name.upper()}" if error["loc"] else name
            problems.append(f"{name} ({env}): {error['msg']}")
        raise ConfigurationError("invalid taskbridge settings:\n  " + "\n  ".join(problems)) from None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


_lock = threading.Lock()
_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = load_settings()
        return _current


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (``None`` re-reads them on next use)."""
    global _current
    with _lock:
        _current = settings
