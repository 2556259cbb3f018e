"""Celery and Dramatiq call sites on taskbridge jobs: ``apply_async``, ``send_with_options``, ``si``.

``delay``/``send`` are plain aliases of ``enqueue`` (on :class:`~taskbridge.job.Job`). The methods
here accept the options that mean the same thing in taskbridge and refuse every other one with an
:class:`UnsupportedOption` that names what to use instead: an option is never silently dropped.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .declared import lookup
from .errors import EnqueueError, JobDefinitionError
from .legacy import job_for_alias
from .spec import DEFAULT

if TYPE_CHECKING:
    from .job import Job, JobCall, Signature


class _Sendable(Protocol):
    """What the mixins need of the class they are mixed into."""

    name: str

    def options(
        self, *, countdown: Any = None, eta: Any = None, queue: str | None = None, expires: Any = ...
    ) -> JobCall: ...

    def signature(self, args: Sequence[Any], kwargs: dict[str, Any], *, immutable: bool) -> Signature: ...


class _Chainable(Protocol):
    job: str

    def enqueue(self) -> Any: ...

    def then(self, other: Signature) -> Signature: ...


_INSTEAD: dict[str, str] = {
    "priority": "taskbridge has no message priorities; send urgent work to its own queue (queue=) "
    "and give that queue its own workers",
    "link": "chain jobs with a.s(...).then(b.s(...)).enqueue(); b receives a's result first (b.si(...): it does not)",
    "link_error": "handle the failure in the job (try/except) or read the dead-letter queue "
    "(taskbridge dead list); there are no error callbacks",
    "routing_key": "pass queue=: taskbridge routes by queue name only",
    "exchange": "pass queue=: taskbridge routes by queue name only",
    "retry": "publishing is retried by the transport client; a failure raises PublishError",
    "retry_policy": "publishing is retried by the transport client; a failure raises PublishError",
    "task_id": "taskbridge assigns the id (the envelope's id); pass your own key as an argument",
    "shadow": "name the job with @job(name=...)",
    "serializer": "taskbridge always sends JSON",
    "compression": "taskbridge always sends plain JSON; pass a reference (an id, a URL) for large data",
    "headers": "pass the value as a job argument",
    "ignore_result": "taskbridge stores no results; a job writes what it produces where it belongs",
    "add_to_parent": "taskbridge stores no results",
    "time_limit": "set the limit on the job: @job(timeout=...) raises JobTimeout in it, hard_timeout= stops it",
    "soft_time_limit": "set @job(timeout=...) on the job",
    "chain": "chain jobs with a.s(...).then(b.s(...)).enqueue()",
    "connection": "taskbridge picks the connection from its settings (TASKBRIDGE_BROKER_URL)",
    "producer": "taskbridge picks the connection from its settings (TASKBRIDGE_BROKER_URL)",
    "publisher": "taskbridge picks the connection from its settings (TASKBRIDGE_BROKER_URL)",
    "max_retries": "set @job(retry=Backoff(max_retries=...)) on the job",
    "min_backoff": "set @job(retry=Backoff(base=...)) on the job",
    "max_backoff": "set @job(retry=Backoff(cap=...)) on the job",
    "retry_when": "set @job(retry=Backoff(on=(SomeError,))) on the job",
    "throws": "set @job(retry=Backoff(on=(...))) to the exceptions that should be retried",
    "on_success": "chain the next job with a.s(...).then(b.s(...)).enqueue()",
    "on_failure": "handle the failure in the job (try/except) or read the dead-letter queue",
    "pipe_ignore": "make the next step with .si(...): it then does not receive the previous result",
    "pipe_target": "chain jobs with a.s(...).then(b.s(...)).enqueue()",
}


def alternative(option: str) -> str | None:
    """What to use instead of a Celery/Dramatiq sending option taskbridge refuses, or None if it is
    accepted (or unknown)."""
    return _INSTEAD.get(option)


class UnsupportedOption(EnqueueError):
    """A Celery or Dramatiq sending option that taskbridge has no equivalent for."""


def refuse(job: str, method: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`UnsupportedOption` for the first option in ``options``, naming the alternative."""
    for option in options:
        instead = _INSTEAD.get(option, "see migration_guide/ for what each option becomes")
        raise UnsupportedOption(f"job {job!r}: {method}({option}=...) has no taskbridge equivalent; {instead}")


def _seconds_until(when: Any, job: str, option: str) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise EnqueueError(f"job {job!r}: {option}= must be timezone-aware, got {when!r}")
        return when.timestamp() - time.time()
    if isinstance(when, int | float) and not isinstance(when, bool):
        return float(when)
    raise EnqueueError(f"job {job!r}: {option}= must be seconds or a timezone-aware datetime, got {when!r}")


def _expiry_after_due(job: str, option: str, seconds: float, due_in: float) -> float:
    """Celery's ``expires`` and Dramatiq's ``max_age`` count from sending; taskbridge's from the due time."""
    left = seconds - due_in
    if left <= 0:
        raise EnqueueError(f"job {job!r}: {option}= passes before the job is due, so it could never run")
    return left


def _due_in(countdown: Any, eta: Any, job: str) -> float:
    due = 0.0
    if countdown is not None:
        due = _seconds_until(countdown, job, "countdown")
    if eta is not None:
        due = max(due, _seconds_until(eta, job, "eta"))
    return max(due, 0.0)


class CallSiteAliases:
    """Celery's and Dramatiq's sending methods, on :class:`~taskbridge.job.Job`."""

    def apply_async(
        self: _Sendable,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | float | None = None,
        expires: dt.datetime | float | None = None,
        queue: str | None = None,
        **unsupported: Any,
    ) -> Any:
        """Celery's ``apply_async``: ``countdown`` seconds or ``eta`` (aware datetime), ``expires`` in
        seconds from now or as a datetime (as in Celery: counted from sending), ``queue``."""
        refuse(self.name, "apply_async", unsupported)
        delay = _due_in(countdown, eta, self.name)
        expiry = DEFAULT
        if expires is not None:
            expiry = _expiry_after_due(self.name, "expires", _seconds_until(expires, self.name, "expires"), delay)
        call = self.options(countdown=delay or None, queue=queue, expires=expiry)
        return call.enqueue(*(args or ()), **dict(kwargs or {}))

    def send_with_options(
        self: _Sendable,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        delay: int | None = None,
        max_age: int | None = None,
        **unsupported: Any,
    ) -> Any:
        """Dramatiq's ``send_with_options``: ``delay`` and ``max_age`` in milliseconds, as in Dramatiq
        (``max_age`` counts from sending)."""
        refuse(self.name, "send_with_options", unsupported)
        seconds = _due_in(None if delay is None else delay / 1000, None, self.name)
        expiry = DEFAULT
        if max_age is not None:
            expiry = _expiry_after_due(self.name, "max_age", max_age / 1000, seconds)
        call = self.options(countdown=seconds or None, expires=expiry)
        return call.enqueue(*args, **dict(kwargs or {}))

    def si(self: _Sendable, *args: Any, **kwargs: Any) -> Signature:
        """Celery's immutable signature: as a chain step, the job does not receive the previous
        step's result (with :meth:`~taskbridge.job.Job.s` it does, as its first argument)."""
        return self.signature(args, kwargs, immutable=True)


class SignatureAliases:
    """Celery's ways of sending a signature or a chain: ``delay()``, ``apply_async()``, ``a | b``."""

    def delay(self: _Chainable) -> Any:
        """Enqueue the first job of the chain (Celery's ``sig.delay()``)."""
        return self.enqueue()

    def apply_async(self: _Chainable, **unsupported: Any) -> Any:
        """Enqueue the first job of the chain; per-call options go on the job instead
        (``job.options(countdown=...)``), so any option here is refused."""
        refuse(self.job, "signature.apply_async", unsupported)
        return self.enqueue()

    def __or__(self: _Chainable, other: Signature) -> Signature:
        return self.then(other)


def chain(*signatures: Signature) -> Signature:
    """Celery's ``chain(a.s(1), b.s(2))``: each job is enqueued after the previous one succeeded."""
    if not signatures:
        raise EnqueueError("chain() needs at least one signature")
    first, *rest = signatures
    for following in rest:
        first = first.then(following)
    return first


def send_task(
    name: str, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
) -> Any:
    """Celery's ``app.send_task(name, args, kwargs, ...)``: enqueue the job with this name or alias
    (its module must be imported), with :meth:`CallSiteAliases.apply_async`'s options."""
    handle = lookup(name) or job_for_alias(name)
    if handle is None:
        raise EnqueueError(f"no job is named {name!r} or has it in aliases=; import the module that declares it")
    return handle.apply_async(args, kwargs, **options)


def check_aliases(job: str, aliases: Iterable[str], registry: Mapping[str, Job[..., Any]]) -> tuple[str, ...]:
    """Validate ``@job(aliases=...)``: names, none of them another job's name or alias. The job's own
    name may be listed: its old producers' messages under that name then run too."""
    if isinstance(aliases, str):
        raise JobDefinitionError(f"job {job!r}: option aliases= must be a list of names, got the string {aliases!r}")
    names = tuple(aliases)
    for name in names:
        if not isinstance(name, str) or not name:
            raise JobDefinitionError(f"job {job!r}: option aliases= must hold non-empty strings, got {name!r}")
        for other, handle in registry.items():
            if other == job:
                continue
            if name == other or name in handle.spec.aliases:
                raise JobDefinitionError(f"job {job!r}: alias {name!r} is already the name or an alias of {other!r}")
    return names
