"""Retry: a failed attempt is retried with backoff while the job's budget lasts, then dead-lettered."""

from __future__ import annotations

from ..errors import JobTimeout
from ..spec import JobSpec


def should_retry(spec: JobSpec, attempt: int, error: BaseException | None) -> bool:
    """Whether attempt number ``attempt`` that failed with ``error`` gets another try.

    ``error`` is None when the engine killed the job (hard timeout, lost worker): retried like a
    JobTimeout if the policy retries those.
    """
    policy = spec.retry
    if attempt > policy.max_retries:
        return False
    return policy.retries(error if error is not None else JobTimeout())


def delay(spec: JobSpec, attempt: int) -> float:
    """The backoff before the next attempt after attempt ``attempt`` failed."""
    return spec.retry.delay(attempt)
