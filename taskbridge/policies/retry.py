"""Retry: a failed attempt is retried with backoff while the job's budget lasts (``@job(retry=Backoff(...))``),
then dead-lettered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..backoff import NO_RETRY, Backoff
from ..errors import JobTimeout
from ..spec import JobSpec
from .base import Draft, Policy


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


class Retry(Policy):
    """Owns ``retry``; the runner asks :func:`should_retry` and :func:`delay` when an attempt fails."""

    name = "retry"
    options = ("retry",)

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        retry = given.get("retry")
        if retry is None:
            return {"retry": NO_RETRY}
        if not isinstance(retry, Backoff):
            raise draft.invalid(f"option retry= must be a Backoff(...), got {retry!r}")
        if retry.problem is not None:
            raise draft.invalid(f"option retry= has an invalid Backoff: {retry.problem}")
        return {"retry": retry}
