"""taskbridge: one @job API for background jobs over Celery, Dramatiq and an embedded engine."""

from .backoff import Backoff
from .config import Settings, get_settings, load_settings, set_settings
from .engine import Engine, TransportFacts, get_engine, set_engine
from .envelope import Envelope
from .errors import (
    ConfigurationError,
    EnqueueError,
    JobCancelled,
    JobDefinitionError,
    JobExpired,
    JobFailed,
    JobNotCancellable,
    JobTimeout,
    PublishError,
    ResultTimeout,
    ResultUnavailable,
    TaskbridgeError,
)
from .handles import JobRef, get_job
from .job import Job, JobSpec, Signature, job
from .outcomes import Dead, Defer, Done, Expired, Outcome, Retry, Skip
from .scheduling import cron, every

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "ConfigurationError",
    "Dead",
    "Defer",
    "Done",
    "Engine",
    "EnqueueError",
    "Envelope",
    "Expired",
    "Job",
    "JobCancelled",
    "JobDefinitionError",
    "JobExpired",
    "JobFailed",
    "JobNotCancellable",
    "JobRef",
    "JobSpec",
    "JobTimeout",
    "Outcome",
    "PublishError",
    "ResultTimeout",
    "ResultUnavailable",
    "Retry",
    "Settings",
    "Signature",
    "Skip",
    "TaskbridgeError",
    "TransportFacts",
    "__version__",
    "configure",
    "cron",
    "every",
    "get_engine",
    "get_job",
    "get_settings",
    "job",
    "load_settings",
    "set_engine",
    "set_settings",
]


def configure(**settings: object) -> Settings:
    """Set settings in code (they win over the environment and files) and rebuild the engine on next use."""
    current = load_settings(**settings)
    set_settings(current)
    set_engine(None)
    from .coordination import set_coordination

    set_coordination(None)
    return current
