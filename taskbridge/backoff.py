"""Retry policy of a job: exponential backoff with a cap, optional jitter, and a retry budget."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .units import Duration, parse_duration


@dataclass(frozen=True)
class Backoff:
    """Retry a failed job up to ``max_retries`` times, waiting ``base * 2**(n-1)`` (at most ``cap``)
    before retry ``n``. With ``jitter`` the wait is drawn uniformly from ``[wait/2, wait]`` so that
    many failing jobs do not come back at once. Only exceptions in ``on`` are retried; others
    go straight to the dead-letter queue.

    Invalid values do not raise here but where the policy is used: ``@job(retry=...)`` refuses it
    with a :class:`~taskbridge.errors.JobDefinitionError` that names the job, and using it on its
    own raises ``ValueError``; :attr:`problem` says what is wrong.
    """

    max_retries: int = 3
    base: Duration = 1.0
    cap: Duration = 600.0
    jitter: bool = True
    on: tuple[type[BaseException], ...] = field(default=(Exception,))
    problem: str | None = field(default=None, init=False, repr=False, compare=False)
    """What is wrong with the values given, or None."""

    def __post_init__(self) -> None:
        try:
            self._normalize()
        except ValueError as exc:
            object.__setattr__(self, "problem", str(exc))

    def _normalize(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"Backoff.max_retries must be a whole number >= 0, got {self.max_retries!r}")
        object.__setattr__(self, "base", parse_duration(self.base, what="Backoff.base"))
        object.__setattr__(self, "cap", parse_duration(self.cap, what="Backoff.cap"))
        on = tuple(self.on) if isinstance(self.on, tuple | list) else (self.on,)
        for kind in on:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ValueError(f"Backoff.on must hold exception classes, got {kind!r}")
        object.__setattr__(self, "on", on)

    def check(self) -> None:
        """Raise ``ValueError`` with :attr:`problem` if the values given are invalid."""
        if self.problem is not None:
            raise ValueError(self.problem)

    def bounds(self, retry: int) -> tuple[float, float]:
        """Smallest and largest wait before retry number ``retry`` (1 = the first retry)."""
        self.check()
        # The exponent is bounded so that a large retry budget cannot overflow a float.
        wait = min(float(self.cap), float(self.base) * 2.0 ** min(max(retry - 1, 0), 1000))
        return (wait / 2, wait) if self.jitter else (wait, wait)

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry``."""
        low, high = self.bounds(retry)
        return random.uniform(low, high) if self.jitter else high

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` is one this policy retries."""
        self.check()
        return isinstance(error, self.on)


NO_RETRY = Backoff(max_retries=0)
