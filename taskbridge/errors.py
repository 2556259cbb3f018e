"""Exceptions raised by taskbridge, each naming what went wrong and what to do."""

from __future__ import annotations


class TaskbridgeError(Exception):
    """Base class of every taskbridge error."""


class ConfigurationError(TaskbridgeError):
    """A setting is missing, malformed or contradicts another one."""


class JobDefinitionError(TaskbridgeError, ValueError):
    """An option given to ``@job`` is invalid; raised at decoration time."""


class EnqueueError(TaskbridgeError, ValueError):
    """A job cannot be enqueued as asked (bad arguments, envelope too large, ...)."""


class EnvelopeError(TaskbridgeError, ValueError):
    """A message body is not a valid taskbridge envelope."""


class UnknownEngineError(ConfigurationError):
    """No engine is registered under the configured name."""


class JobTimeout(Exception):
    """Raised inside a running job when its ``timeout`` has passed."""


class PublishError(TaskbridgeError):
    """The transport did not store the message: the broker was unreachable, refused it, or did not
    confirm it. Raised by every engine alike; the transport's own exception is the ``__cause__``.
    For a batch, messages before the failing one may have been stored."""


class CoordinationError(TaskbridgeError):
    """The coordination store (locks, limits, uniqueness) could not be reached; the store's own
    exception is the ``__cause__``."""


class JobFailed(TaskbridgeError):
    """``result()`` of a job that failed for good (dead): ``error_type``, ``error_message`` and
    ``traceback`` (text, None when the job never ran) of its last failure."""

    def __init__(self, message: str, error_type: str, error_message: str, traceback: str | None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class JobExpired(TaskbridgeError):
    """``result()`` of a job that waited past its expiry: it never ran and never will."""


class JobCancelled(TaskbridgeError):
    """``result()`` of a job that was cancelled (or skipped) before it ran."""


class ResultTimeout(TaskbridgeError, TimeoutError):
    """``result(timeout=...)`` waited that long and the job has not finished."""


class ResultUnavailable(TaskbridgeError):
    """No result can be had: the job is not tracked, keeps no result, its record expired, or the
    store cannot be reached."""


class JobNotCancellable(TaskbridgeError):
    """``cancel()`` of a job that is running or finished, or has no record."""
