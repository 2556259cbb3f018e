"""Settings: environment variables (TASKBRIDGE_*), taskbridge.toml, or [tool.taskbridge] in pyproject.toml."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from . import config_check, tls, transports
from .config_files import ConfigFile, find_config_files
from .engine_settings import SECTIONS, CelerySettings, DramatiqSettings
from .errors import ConfigurationError
from .transports import Transport, mask_url
from .units import parse_duration

_MIN_KEY_LENGTH = 16
_files_in_force: ContextVar[tuple[ConfigFile, ...] | None] = ContextVar("taskbridge_config_files", default=None)


class Settings(BaseSettings):
    """Every taskbridge setting. Settings given in code win over environment variables, which win
    over taskbridge.toml, which wins over ``[tool.taskbridge]`` in pyproject.toml (see
    :func:`taskbridge.config_files.find_config_files` for where the files are looked for)."""

    # TASKBRIDGE_CELERY_LOGLEVEL is celery.loglevel: split once, after the section's name.
    model_config = SettingsConfigDict(
        env_prefix="TASKBRIDGE_",
        extra="forbid",
        validate_default=True,
        env_nested_delimiter="_",
        env_nested_max_split=1,
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
    chain_max_steps: int = Field(100, ge=1, description="longest chain enqueue accepts, in steps")
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
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC key: envelopes are signed, workers dead-letter unsigned or wrongly signed ones",
    )
    signing_keys_accepted: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="older signing keys workers still accept while keys rotate (comma-separated or a JSON list)",
    )
    track_jobs: bool = Field(False, description="keep a status record of every job, not only of jobs with result_ttl")
    track_ttl: float = Field(3600.0, description="how long a finished job's record is kept (jobs without result_ttl)")
    result_ttl: float | None = Field(None, description="keep every job's return value this long (or per job)")
    strict: bool = Field(False, description="unknown TASKBRIDGE_* variables and file keys are errors, not warnings")
    connect_timeout: float = Field(
        5.0, description="how long commands and workers wait for the broker and coordination store to answer"
    )
    broker_start_wait: float | None = Field(
        None,
        description="how long a starting worker waits for a broker it cannot reach yet ('none': until it is up)",
    )
    exit_drain_timeout: float = Field(
        10.0, description="embedded engine: how long a process exiting waits for the jobs already due"
    )
    scheduler_lease: float = Field(
        15.0, description="periodic jobs: the leader lease; when the leader dies another scheduler fires within it"
    )
    scheduler_grace: float = Field(
        60.0, description="periodic jobs: how late a run may fire and still count as on time (not missed)"
    )

    @field_validator("scheduler_lease", "scheduler_grace", mode="before")
    @classmethod
    def _scheduler_durations(cls, value: Any, info: Any) -> float:
        seconds = parse_duration(value, what=info.field_name)
        if seconds <= 0:
            raise ValueError("must be greater than zero")
        return seconds

    celery: CelerySettings = Field(
        default_factory=CelerySettings, description="the Celery engine's own settings ([tool.taskbridge.celery])"
    )
    dramatiq: DramatiqSettings = Field(
        default_factory=DramatiqSettings, description="the Dramatiq engine's own settings ([tool.taskbridge.dramatiq])"
    )
    outage_reminder: float = Field(
        30.0,
        description="while the broker or coordination store is down, a worker logs it once, then at most this often",
    )

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _files: tuple[ConfigFile, ...] = PrivateAttr(default=())

    @field_validator(
        "default_timeout",
        "default_expires",
        "max_native_delay",
        "inline_wait_max",
        "lock_retry",
        "visibility_timeout",
        "track_ttl",
        "result_ttl",
        "connect_timeout",
        "broker_start_wait",
        "exit_drain_timeout",
        "outage_reminder",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any, info: Any) -> float | None:
        required = (
            "inline_wait_max",
            "lock_retry",
            "visibility_timeout",
            "connect_timeout",
            "exit_drain_timeout",
            "track_ttl",
            "outage_reminder",
        )
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            if info.field_name in required:
                raise ValueError("must be a duration")
            return None
        seconds = parse_duration(value, what=info.field_name)
        if seconds == 0 and info.field_name not in ("inline_wait_max", "exit_drain_timeout", "broker_start_wait"):
            hint = "" if info.field_name in required else " (or 'none' for no limit)"
            raise ValueError(f"must be greater than zero{hint}")
        return seconds

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        scheme = transports.parse(value).scheme
        if scheme not in transports.BROKER_SCHEMES:
            raise ValueError(f"unsupported scheme {scheme!r}; use one of {', '.join(transports.BROKER_SCHEMES)}")
        tls.check(value)
        return value

    @field_validator("coordination_url")
    @classmethod
    def _coordination(cls, value: str | None) -> str | None:
        if value is not None and transports.kind_of(value) not in ("memory", "redis"):
            raise ValueError("must be memory:// or a redis:// URL")
        if value is not None:
            tls.check(value)
        return value

    @field_validator("signing_keys_accepted", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("must be a JSON list of strings or comma-separated keys") from None
            return [key.strip() for key in text.split(",") if key.strip()]
        return value

    @field_validator("signing_key", "signing_keys_accepted")
    @classmethod
    def _key_length(cls, value: Any) -> Any:
        for key in value if isinstance(value, list) else [value]:
            if key is not None and len(key.get_secret_value()) < _MIN_KEY_LENGTH:
                raise ValueError(f"a signing key must be at least {_MIN_KEY_LENGTH} characters (use a random one)")
        return value

    @model_validator(mode="after")
    def _signing(self) -> Settings:
        if self.signing_keys_accepted and self.signing_key is None:
            raise ValueError(
                "signing_keys_accepted (TASKBRIDGE_SIGNING_KEYS_ACCEPTED) needs TASKBRIDGE_SIGNING_KEY: "
                "a worker checks signatures only when it has a key of its own"
            )
        return self

    @model_validator(mode="after")
    def _engine_and_broker(self) -> Settings:
        if self.engine != "memory" and self.transport.kind == "memory":
            raise ValueError(
                f"engine {self.engine!r} needs a broker: set TASKBRIDGE_BROKER_URL to a redis://, amqp:// or sqs:// URL"
            )
        return self

    @property
    def transport(self) -> Transport:
        """The broker URL parsed: the transport's kind, where it is, and what it accepts."""
        return transports.parse(self.broker_url, sqs_endpoint_url=self.sqs_endpoint_url, sqs_region=self.sqs_region)

    @property
    def effective_coordination_url(self) -> str:
        """The coordination store: the configured one, else the Redis broker, else in-process memory."""
        if self.coordination_url:
            return self.coordination_url
        if self.transport.kind == "redis":
            return self.broker_url
        return "memory://"

    @property
    def config_files(self) -> list[str]:
        """The configuration files these settings were read from, the one that wins first."""
        return [f.where for f in self._files]

    def origin(self, name: str) -> str:
        """Where setting ``name`` came from: ``code``, ``env TASKBRIDGE_...``, a file, or ``default``."""
        return self._origins.get(name, "default")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        fields = set(settings_cls.model_fields)
        found = _files_in_force.get()
        if found is None:  # Settings() built directly, not through load_settings()
            found = tuple(find_config_files())
        files = tuple(
            InitSettingsSource(settings_cls, {k: v for k, v in f.values.items() if k in fields}) for f in found
        )
        return (init_settings, env_settings, *files)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings; a bad value raises :class:`ConfigurationError` naming the setting.

    Unknown ``TASKBRIDGE_*`` variables and unknown keys in the files are logged as warnings that
    name the closest setting, or raised as one error when the ``strict`` setting is on.
    """
    files = find_config_files()
    sections = {name: list(model.model_fields) for name, model in SECTIONS.items()}
    variables = [name.replace(".", "_") for name in setting_names()] + list(SECTIONS)
    unknown = config_check.unknown_variables(os.environ, variables)
    for file in files:
        unknown += config_check.unknown_keys(file.values, Settings.model_fields, file.where, sections)
    origins = _origins(overrides, files)
    token = _files_in_force.set(tuple(files))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            setting = ".".join(loc[: 2 if loc and loc[0] in SECTIONS else 1])
            name = ".".join(loc) or "settings"
            env = variable_of(setting) if loc else name
            where = origins.get(setting, "")
            source = f", from {where}" if where and not where.startswith(("env", "code")) else ""
            problems.append(f"{name} ({env}{source}): {error['msg']}")
        raise ConfigurationError("invalid taskbridge settings:\n  " + "\n  ".join(problems + unknown)) from None
    finally:
        _files_in_force.reset(token)
    settings._origins = origins
    settings._files = tuple(files)
    config_check.report(unknown, strict=settings.strict)
    return settings


def setting_names() -> list[str]:
    """Every setting by name, those of the engines' sections dotted (``celery.loglevel``)."""
    names = [name for name in Settings.model_fields if name not in SECTIONS]
    return names + [f"{section}.{name}" for section, model in SECTIONS.items() for name in model.model_fields]


def variable_of(name: str) -> str:
    """The environment variable of a setting: ``celery.loglevel`` is ``TASKBRIDGE_CELERY_LOGLEVEL``."""
    return "TASKBRIDGE_" + name.replace(".", "_").upper()


def _origins(overrides: Mapping[str, Any], files: list[ConfigFile]) -> dict[str, str]:
    """Where each setting that is not at its default comes from, by the same precedence as the sources."""
    variables = {name.upper(): name for name in os.environ}
    origins: dict[str, str] = {}
    for name in setting_names():
        section, _, key = name.rpartition(".")
        variable = variable_of(name)
        if name in overrides or (section and key in _table(overrides.get(section))):
            origins[name] = "code"
        elif variable in variables:
            origins[name] = f"env {variables[variable]}"
        else:
            found = next((f for f in files if key in (_table(f.values.get(section)) if section else f.values)), None)
            if found is not None:
                origins[name] = found.where
    return origins


def _table(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return {}


def banner(settings: Settings) -> str:
    """One line saying which engine, broker, coordination store and configuration files are in force."""
    files = "; ".join(settings.config_files) or "none (environment and defaults)"
    return (
        f"engine={settings.engine} broker={mask_url(settings.broker_url)} "
        f"coordination={mask_url(settings.effective_coordination_url)} config={files}"
    )


_lock = threading.Lock()
_current: Settings | None = None
_peeked: tuple[object, Settings | None] | None = None


def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = load_settings()
        return _current


def settings_if_valid() -> Settings | None:
    """The process-wide settings if already read, else read now without keeping them (so settings
    given later in code still apply); None when they are invalid: whoever reads them next says why.

    Settings read here are reused while the working directory and the ``TASKBRIDGE_*`` variables
    stay the same, so that declaring many jobs reads them once.
    """
    global _peeked
    with _lock:
        current = _current
    if current is not None:
        return current
    try:
        directory = os.getcwd()
    except OSError:  # the working directory was removed
        directory = ""
    key = (directory, tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("TASKBRIDGE_"))))
    peeked = _peeked
    if peeked is not None and peeked[0] == key:
        return peeked[1]
    try:
        settings: Settings | None = load_settings()
    except ConfigurationError:
        settings = None
    _peeked = (key, settings)
    return settings


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (``None`` re-reads them on next use)."""
    global _current
    with _lock:
        _current = settings
