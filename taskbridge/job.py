"""The ``@job`` decorator, the validated :class:`JobSpec`, the job handle and the job registry."""

from __future__ import annotations

import functools
import inspect
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from .backoff import NO_RETRY, Backoff
from .chains import check_length, step_of
from .compat import CallSiteAliases, SignatureAliases, check_aliases
from .declared import _registry, lookup, registry
from .envelope import check_json_arguments, is_queue_name
from .errors import EnqueueError, JobDefinitionError
from .handles import JobRef
from .producer import CallOptions, enqueue_batches, enqueue_default, enqueue_one
from .spec import DEFAULT, JobSpec, KeyTemplateError, OnLock, _Default
from .units import Duration, Rate, parse_duration, parse_rate

__all__ = ["DEFAULT", "Job", "JobCall", "JobSpec", "KeyTemplateError", "Signature", "job", "lookup", "registry"]

P = ParamSpec("P")
R = TypeVar("R")


class Job(CallSiteAliases, Generic[P, R]):
    """A job handle: call it to run inline, ``.enqueue(...)`` to run it on a worker."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.name = spec.name
        functools.update_wrapper(self, spec.func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, in this process, with no policy applied."""
        result: R = self.spec.func(*args, **kwargs)
        return result

    def __repr__(self) -> str:
        return f"<job {self.name}>"

    def options(
        self,
        *,
        countdown: Duration | None = None,
        eta: Any = None,
        queue: str | None = None,
        expires: Duration | _Default | None = DEFAULT,
    ) -> JobCall:
        """Per-call options: ``.options(countdown=60).enqueue(...)``."""
        return JobCall(self, countdown=countdown, eta=eta, queue=queue, expires=expires)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobRef | None:
        """Publish one run of the job; returns its :class:`~taskbridge.JobRef` (status, result,
        cancel; ``ref.envelope`` is what was published), or None if a ``unique`` twin is pending."""
        return enqueue_default(self.spec, args, kwargs)

    delay = enqueue
    send = enqueue

    @overload
    def enqueue_many(
        self,
        calls: Iterable[Any],
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        refs: Literal[False] = False,
    ) -> int: ...
    @overload
    def enqueue_many(
        self,
        calls: Iterable[Any],
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        refs: Literal[True],
    ) -> list[JobRef]: ...
    def enqueue_many(
        self,
        calls: Iterable[Any],
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        refs: bool = False,
    ) -> int | list[JobRef]:
        """Publish many runs in batches; each item is a kwargs dict, an args tuple/list, or ``(args, kwargs)``.

        Memory stays bounded by the batch size, so a generator of millions is fine. ``progress`` is
        called after each batch with the number of items handled so far. Returns the count published,
        or with ``refs=True`` the list of :class:`~taskbridge.JobRef` (then memory grows with the calls).
        """
        return JobCall(self).enqueue_many(calls, batch_size=batch_size, progress=progress, refs=refs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this job with these arguments, to enqueue later or chain with ``.then()``;
        as a chain step it receives the previous step's result first (``.si()``: it does not)."""
        return self.signature(args, kwargs, immutable=False)

    def signature(self, args: Sequence[Any], kwargs: dict[str, Any], *, immutable: bool) -> Signature:
        """:meth:`s` (``immutable=False``) or ``.si()``, with the arguments checked for either."""
        check_json_arguments(self.name, args, kwargs)
        try:
            self.spec.signature.bind(*args, **kwargs)
        except TypeError as exc:
            try:  # as a chain step, the previous step's result comes first
                if immutable:
                    raise
                self.spec.signature.bind(None, *args, **kwargs)
            except TypeError:
                raise EnqueueError(f"job {self.name!r}: arguments do not match {self.spec.described}: {exc}") from None
        return Signature(self.name, list(args), dict(kwargs), immutable=immutable)


@dataclass
class JobCall:
    """A job with per-call options, ready to enqueue."""

    job: Job[..., Any]
    countdown: Duration | None = None
    eta: Any = None
    queue: str | None = None
    expires: Duration | _Default | None = DEFAULT

    def enqueue(self, *args: Any, **kwargs: Any) -> JobRef | None:
        return enqueue_one(self.job.spec, args, kwargs, self._options())

    delay = enqueue
    send = enqueue

    def enqueue_many(
        self,
        calls: Iterable[Any],
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        refs: bool = False,
    ) -> Any:
        """:meth:`Job.enqueue_many` with these options."""
        return enqueue_batches(
            self.job.spec, calls, self._options(), batch_size=batch_size, progress=progress, refs=refs
        )

    def _options(self) -> CallOptions:
        return CallOptions(countdown=self.countdown, eta=self.eta, queue=self.queue, expires=self.expires)


@dataclass
class Signature(SignatureAliases):
    """A job and its arguments, to run later; ``a.s(1).then(b.s(2)).enqueue()`` runs b after a succeeds."""

    job: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    chain: list[dict[str, Any]] = field(default_factory=list)
    immutable: bool = False
    """Set by ``.si()``: as a chain step, this job does not receive the previous step's result."""

    def then(self, other: Signature) -> Signature:
        """This signature followed by ``other`` (and the rest of ``other``'s chain); ``other``
        receives this chain's last result as its first argument unless it was made with ``.si()``."""
        return Signature(self.job, self.args, self.kwargs, [*self.chain, step_of(other), *other.chain], self.immutable)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "args": self.args, "kwargs": self.kwargs}

    def enqueue(self) -> JobRef | None:
        """Publish the first job of the chain; each next one is published when the previous is done."""
        handle = lookup(self.job)
        if handle is None:
            raise JobDefinitionError(f"job {self.job!r} is not declared in this process; import its module first")
        check_length(self)
        return enqueue_one(handle.spec, tuple(self.args), self.kwargs, chain=self.chain)


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _duration_option(name: str, job_name: str, value: Any, *, allow_none: bool) -> float | _Default | None:
    if isinstance(value, _Default):
        return value
    if value is None:
        if allow_none:
            return None
        raise JobDefinitionError(f"job {job_name!r}: option {name}= must be a duration, not None")
    try:
        seconds = parse_duration(value, what=name)
    except ValueError as exc:
        raise JobDefinitionError(f"job {job_name!r}: option {exc}") from None
    if seconds <= 0:
        raise JobDefinitionError(f"job {job_name!r}: option {name}= must be greater than zero, got {value!r}")
    return seconds


def job(
    func: Callable[P, R] | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    timeout: Duration | _Default | None = DEFAULT,
    hard_timeout: Duration | None = None,
    expires: Duration | _Default | None = DEFAULT,
    retry: Backoff | None = None,
    lock: str | None = None,
    lock_ttl: Duration | None = None,
    on_lock: OnLock = "defer",
    unique: bool | str = False,
    unique_ttl: Duration | None = None,
    concurrency: int | None = None,
    rate_limit: str | Rate | None = None,
    rate_key: str | None = None,
    drop_unknown_kwargs: bool = True,
    result_ttl: Duration | None = None,
    aliases: Iterable[str] = (),
) -> Any:
    """Declare a background job.

    ``timeout`` and ``expires`` default to the settings' ``default_timeout``/``default_expires``;
    pass ``None`` explicitly to have none. ``lock="user:{user_id}"`` lets at most one run per key
    at a time across all workers (``on_lock="defer"`` or ``"skip"`` when it is held);
    ``concurrency=N`` caps running instances cluster-wide; ``rate_limit="70/s"`` is global across
    workers (per ``rate_key`` template if given); ``unique=True`` or a key template refuses a second
    enqueue while one is pending. ``aliases=["myapp.tasks.send_report"]`` also runs messages that
    unmigrated Celery or Dramatiq producers send under those names. ``result_ttl="1h"`` keeps the
    job's status and (JSON) return value that long after it finishes, for ``ref.result()``. Invalid
    options raise :class:`JobDefinitionError` right here.
    """

    def decorate(fn: Callable[P, R]) -> Job[P, R]:
        return Job(_build_spec(fn))

    def _build_spec(fn: Callable[..., Any]) -> JobSpec:
        if not callable(fn):
            raise JobDefinitionError(f"@job must decorate a function (options go in as keywords), got {fn!r}")
        job_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not isinstance(job_name, str) or not job_name:
            raise JobDefinitionError(f"@job on {fn!r}: option name= must be a non-empty string, got {name!r}")
        if queue is not None and not is_queue_name(queue):
            raise JobDefinitionError(
                f"job {job_name!r}: option queue= must be letters, digits, '-', '_' or '.', got {queue!r}"
            )
        parsed_timeout = _duration_option("timeout", job_name, timeout, allow_none=True)
        parsed_hard = _duration_option("hard_timeout", job_name, hard_timeout, allow_none=True)
        parsed_expires = _duration_option("expires", job_name, expires, allow_none=True)
        parsed_lock_ttl = _duration_option("lock_ttl", job_name, lock_ttl, allow_none=True)
        parsed_unique_ttl = _duration_option("unique_ttl", job_name, unique_ttl, allow_none=True)
        parsed_result_ttl = _duration_option("result_ttl", job_name, result_ttl, allow_none=True)
        if isinstance(parsed_hard, float) and isinstance(parsed_timeout, float) and parsed_hard <= parsed_timeout:
            raise JobDefinitionError(
                f"job {job_name!r}: hard_timeout ({parsed_hard:g}s) must be longer than timeout ({parsed_timeout:g}s)"
            )
        if retry is not None and not isinstance(retry, Backoff):
            raise JobDefinitionError(f"job {job_name!r}: option retry= must be a Backoff(...), got {retry!r}")
        if on_lock not in ("defer", "skip"):
            raise JobDefinitionError(f"job {job_name!r}: option on_lock= must be 'defer' or 'skip', got {on_lock!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise JobDefinitionError(
                f"job {job_name!r}: option concurrency= must be a whole number >= 1, got {concurrency!r}"
            )
        parsed_rate: Rate | None = None
        if rate_limit is not None:
            try:
                parsed_rate = parse_rate(rate_limit)
            except ValueError as exc:
                raise JobDefinitionError(f"job {job_name!r}: option {exc}") from None
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unique_template = None
        if unique is True:
            unique_template = ""
        elif isinstance(unique, str) and unique:
            unique_template = unique
        elif unique not in (False, None, ""):
            raise JobDefinitionError(f"job {job_name!r}: option unique= must be True or a key template, got {unique!r}")
        for option, template in (("lock", lock), ("unique", unique_template), ("rate_key", rate_key)):
            if template is None:
                continue
            if not isinstance(template, str) or (option != "unique" and not template):
                raise JobDefinitionError(
                    f"job {job_name!r}: option {option}= must be a non-empty string, got {template!r}"
                )
            try:
                fields = _template_fields(template)
            except ValueError as exc:
                raise JobDefinitionError(
                    f"job {job_name!r}: option {option}={template!r} is not a valid template: {exc}"
                ) from None
            for field_name in fields:
                if not field_name.isidentifier():
                    raise JobDefinitionError(
                        f"job {job_name!r}: option {option}={template!r} may only use plain argument names "
                        "like {user_id}"
                    )
                if field_name not in params and not takes_any:
                    raise JobDefinitionError(
                        f"job {job_name!r}: option {option}={template!r} uses {{{field_name}}}, which is not an "
                        f"argument of {fn.__qualname__}{inspect.signature(fn)}"
                    )
        if not isinstance(drop_unknown_kwargs, bool):
            raise JobDefinitionError(
                f"job {job_name!r}: option drop_unknown_kwargs= must be True or False, got {drop_unknown_kwargs!r}"
            )
        if rate_key is not None and parsed_rate is None:
            raise JobDefinitionError(f"job {job_name!r}: option rate_key= needs rate_limit= as well")
        if job_name in _registry and _registry[job_name].spec.func is not fn:
            existing = _registry[job_name].spec.func
            if (existing.__module__, existing.__qualname__) != (fn.__module__, fn.__qualname__):
                raise JobDefinitionError(
                    f"job {job_name!r} is declared twice ({existing.__module__} and {fn.__module__}); pass name= to one"
                )
        return JobSpec(
            name=job_name,
            func=fn,
            queue=queue,
            timeout=parsed_timeout,
            hard_timeout=parsed_hard if isinstance(parsed_hard, float) else None,
            expires=parsed_expires,
            retry=retry or NO_RETRY,
            lock=lock,
            lock_ttl=parsed_lock_ttl if isinstance(parsed_lock_ttl, float) else None,
            on_lock=on_lock,
            unique=unique_template,
            unique_ttl=parsed_unique_ttl if isinstance(parsed_unique_ttl, float) else None,
            concurrency=concurrency,
            rate_limit=parsed_rate,
            rate_key=rate_key,
            drop_unknown_kwargs=drop_unknown_kwargs,
            result_ttl=parsed_result_ttl if isinstance(parsed_result_ttl, float) else None,
            aliases=check_aliases(job_name, aliases, _registry),
        )

    def register(fn: Callable[P, R]) -> Job[P, R]:
        handle = decorate(fn)
        _registry[handle.name] = handle
        return handle

    if func is not None:
        return register(func)
    return register
