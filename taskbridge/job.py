"""The ``@job`` decorator, the validated :class:`JobSpec`, the job handle and the job registry."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from .backoff import Backoff
from .chains import check_length, step_of
from .compat import CallSiteAliases, SignatureAliases, check_aliases
from .config import settings_if_valid
from .declared import declaring, lookup, registry
from .envelope import check_json_arguments, is_queue_name
from .errors import EnqueueError, JobDefinitionError
from .handles import JobRef
from .policies import POLICIES, needs_coordination
from .policies.base import Draft
from .producer import CallOptions, enqueue_batches, enqueue_default, enqueue_one
from .scheduling.options import parse_periodic
from .spec import DEFAULT, JobSpec, KeyTemplateError, OnLock, _Default, split_parsed
from .transports import check_declared_queue
from .units import Duration, Rate

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
    schedule: Any = None,
    schedule_tz: str | None = None,
    missed: str = "skip",
    **options: Any,
) -> Any:
    """Declare a background job.

    ``timeout`` and ``expires`` default to the settings' ``default_timeout``/``default_expires``;
    pass ``None`` explicitly to have none. ``lock="user:{user_id}"`` lets at most one run per key
    at a time across all workers (``on_lock="defer"`` or ``"skip"`` when it is held);
    ``concurrency=N`` caps running instances cluster-wide; ``rate_limit="70/s"`` is global across
    workers (per ``rate_key`` template if given); ``unique=True`` or a key template refuses a second
    enqueue while one is pending. ``aliases=["myapp.tasks.send_report"]`` also runs messages that
    unmigrated Celery or Dramatiq producers send under those names. ``result_ttl="1h"`` keeps the
    job's status and (JSON) return value that long after it finishes, for ``ref.result()``.
    ``schedule="*/5 * * * *"`` (cron, read in ``schedule_tz``) or ``schedule=every("30s")`` has
    ``taskbridge scheduler`` enqueue it periodically; ``missed="skip"`` or ``"catch_up_once"`` says
    what happens to runs missed while no scheduler ran (see :mod:`taskbridge.scheduling`).
    ``**options`` are the options of policies registered beside the built-in ones
    (:func:`taskbridge.policies.register`). Invalid or unknown options raise
    :class:`JobDefinitionError` right here.
    """

    given = {
        "timeout": timeout,
        "hard_timeout": hard_timeout,
        "expires": expires,
        "retry": retry,
        "lock": lock,
        "lock_ttl": lock_ttl,
        "on_lock": on_lock,
        "unique": unique,
        "unique_ttl": unique_ttl,
        "concurrency": concurrency,
        "rate_limit": rate_limit,
        "rate_key": rate_key,
        "drop_unknown_kwargs": drop_unknown_kwargs,
        **options,
    }

    def decorate(fn: Callable[P, R]) -> Job[P, R]:
        return Job(_build_spec(fn))

    def _build_spec(fn: Callable[..., Any]) -> JobSpec:
        if not callable(fn):
            raise JobDefinitionError(f"@job must decorate a function (options go in as keywords), got {fn!r}")
        job_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not isinstance(job_name, str) or not job_name:
            raise JobDefinitionError(f"@job on {fn!r}: option name= must be a non-empty string, got {name!r}")
        draft = Draft(job_name, fn)
        _check_known(draft, options)
        if queue is not None and not is_queue_name(queue):
            raise draft.invalid(f"option queue= must be letters, digits, '-', '_' or '.', got {queue!r}")
        check_declared_queue(job_name, queue, settings_if_valid())
        parsed: dict[str, Any] = {}
        for policy in POLICIES:
            parsed.update(policy.parse(draft, given))
        fields, policy_options = split_parsed(parsed)
        parsed_result_ttl = draft.seconds("result_ttl", result_ttl)
        declared = registry()
        if job_name in declared and declared[job_name].spec.func is not fn:
            existing = declared[job_name].spec.func
            if (existing.__module__, existing.__qualname__) != (fn.__module__, fn.__qualname__):
                raise JobDefinitionError(
                    f"job {job_name!r} is declared twice ({existing.__module__} and {fn.__module__}); pass name= to one"
                )
        spec = JobSpec(
            name=job_name,
            func=fn,
            queue=queue,
            result_ttl=parsed_result_ttl,
            aliases=check_aliases(job_name, aliases, declared),
            periodic=parse_periodic(job_name, fn, schedule, schedule_tz, missed),
            policy_options=policy_options,
            **fields,
        )
        return replace(spec, needs_coordination=needs_coordination(spec))

    def register(fn: Callable[P, R]) -> Job[P, R]:
        with declaring() as declared:
            handle = decorate(fn)
            declared[handle.name] = handle
        return handle

    if func is not None:
        return register(func)
    return register


def _check_known(draft: Draft, options: dict[str, Any]) -> None:
    """Refuse a keyword no registered policy owns, naming it, the nearest known option and the known ones."""
    unknown = sorted(set(options) - POLICIES.options)
    if not unknown:
        return
    known = sorted({*inspect.signature(job).parameters, *POLICIES.options} - {"func", "options"})
    near = difflib.get_close_matches(unknown[0], known, n=1)
    hint = f"; did you mean {near[0]}=?" if near else ""
    raise draft.invalid(
        f"unknown option {', '.join(f'{name}=' for name in unknown)}{hint} "
        f"(@job takes {', '.join(known)}; a policy registered with taskbridge.policies.register adds its own)"
    )
