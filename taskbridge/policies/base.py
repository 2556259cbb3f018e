"""The Policy hook surface: one concern of a job (its options, what it checks at enqueue, what it
decides before a run and what it gives back after), and the context a message carries through them.

A policy declares the ``@job`` options it owns in :attr:`Policy.options`; ``@job`` hands it their
values in :meth:`Policy.parse`, which validates them and returns their parsed values by option
name (read back with :meth:`JobSpec.option <taskbridge.spec.JobSpec.option>`). The runner calls
:meth:`Policy.before_run` on every policy that :meth:`Policy.applies` to the job, in the order of
:data:`taskbridge.policies.POLICIES`, and :meth:`Policy.after_run` on those that passed, in
reverse, once the job ends.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import JobDefinitionError
from ..spec import JobSpec, _Default
from ..units import parse_duration

if TYPE_CHECKING:
    from ..config import Settings
    from ..coordination import Coordination
    from ..envelope import Envelope
    from ..outcomes import Outcome, Reason
    from .arguments import BoundCall

_LONGEST_RUN = 3600.0


def owner_token(envelope: Envelope) -> str:
    """The token a run holds its lock and lease under: known to whoever has the message, so the
    engine can release them for a run it killed (hard timeout) instead of waiting out their TTL."""
    return f"{envelope.id}:{envelope.attempt}"


@dataclass(frozen=True)
class Draft:
    """The job being declared, as policies see it while they parse their options."""

    name: str
    func: Callable[..., Any]

    @property
    def parameters(self) -> Mapping[str, inspect.Parameter]:
        return inspect.signature(self.func).parameters

    @property
    def takes_any_kwargs(self) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.parameters.values())

    def invalid(self, message: str) -> JobDefinitionError:
        """The error for an option of this job: ``job 'name': <message>``."""
        return JobDefinitionError(f"job {self.name!r}: {message}")

    def duration(self, option: str, value: Any) -> float | _Default | None:
        """A duration option: seconds (> 0), ``None`` for no limit, or the settings' default."""
        if isinstance(value, _Default) or value is None:
            return value
        try:
            seconds = parse_duration(value, what=option)
        except ValueError as exc:
            raise self.invalid(f"option {exc}") from None
        if seconds <= 0:
            raise self.invalid(f"option {option}= must be greater than zero, got {value!r}")
        return seconds

    def seconds(self, option: str, value: Any) -> float | None:
        """A duration option without a settings default: seconds (> 0) or None."""
        parsed = self.duration(option, value)
        return parsed if isinstance(parsed, float) else None

    def template(self, option: str, template: Any, *, allow_empty: bool = False) -> str:
        """A key template like ``"user:{user_id}"`` whose fields are all arguments of the job."""
        if not isinstance(template, str) or (not allow_empty and not template):
            raise self.invalid(f"option {option}= must be a non-empty string, got {template!r}")
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise self.invalid(f"option {option}={template!r} is not a valid template: {exc}") from None
        for name in fields:
            if not name.isidentifier():
                raise self.invalid(f"option {option}={template!r} may only use plain argument names like {{user_id}}")
            if name not in self.parameters and not self.takes_any_kwargs:
                raise self.invalid(
                    f"option {option}={template!r} uses {{{name}}}, which is not an argument of "
                    f"{self.func.__qualname__}{inspect.signature(self.func)}"
                )
        return template


@dataclass(slots=True)
class RunContext:
    """One message on its way through the policies of its job."""

    spec: JobSpec
    envelope: Envelope
    """The envelope as it will run (a policy may replace it, e.g. to drop a header)."""
    settings: Settings
    coordination: Coordination
    timeout: float | None
    """The soft timeout the job runs under (its own or the settings' default)."""
    report_wait: Callable[[Envelope, Reason, float], None]
    """The runner's report of a wait slept in the worker (see :meth:`waited`)."""
    templates: tuple[str, ...] = ()
    """The key template options the job sets (``lock``, ``rate_key``...), rendered into :attr:`keys`."""
    bound: BoundCall | None = None
    """The arguments the job is called with, once :class:`~taskbridge.policies.arguments.Arguments` bound them."""
    keys: dict[str, str] = field(default_factory=dict)
    """Key templates rendered once from the arguments, by option name (``lock``, ``rate_key``)."""
    owner: str = ""
    """The token this run holds locks and leases under (:func:`owner_token`)."""

    def __post_init__(self) -> None:
        self.owner = owner_token(self.envelope)

    def waited(self, reason: Reason, seconds: float) -> None:
        """Report that the worker sleeps ``seconds`` for ``reason`` before running the job."""
        self.report_wait(self.envelope, reason, seconds)

    @property
    def lease_ttl(self) -> float:
        """How long a lock or concurrency lease outlives a crashed worker: the job's ``lock_ttl``, or
        its own limit plus a margin."""
        if self.spec.lock_ttl is not None:
            return self.spec.lock_ttl
        limit = self.spec.hard_timeout or self.timeout or _LONGEST_RUN
        return limit + 30.0


@dataclass
class EnqueueCall:
    """One call of a job being enqueued, before its envelope is built."""

    spec: JobSpec
    args: Sequence[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    """The envelope's headers, for a policy to add to."""
    coordination: Coordination
    wait: float
    """How long the message may wait before it runs: its delay plus its expiry (or an hour)."""


class Policy:
    """One concern of a job; every hook is a no-op, so a policy implements only what it needs."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    """The ``@job`` options this policy owns."""
    templates: ClassVar[tuple[str, ...]] = ()
    """Options holding a key template, rendered once per message into :attr:`RunContext.keys`."""
    coordinated: ClassVar[bool] = False
    """Whether the policy keeps state in the coordination store (an unreachable store defers the job)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.holds = cls.after_run is not Policy.after_run

    holds: ClassVar[bool] = False
    """Whether the policy gives something back after a run (it implements :meth:`after_run`)."""

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate this policy's options (``given`` holds every ``@job`` option) and return their
        parsed values by option name: :class:`~taskbridge.spec.JobSpec` fields for the built-in
        options, :attr:`JobSpec.policy_options <taskbridge.spec.JobSpec.policy_options>` for the
        others, each read with ``spec.option(name)``; raise ``draft.invalid(...)`` otherwise."""
        return {}

    def applies(self, spec: JobSpec) -> bool:
        """Whether the job uses this policy (the producer and the runner skip it otherwise)."""
        return True

    def on_enqueue(self, call: EnqueueCall) -> bool:
        """Whether the call is published (False: it is dropped, e.g. a duplicate)."""
        return True

    def enqueue_undone(self, headers: Mapping[str, Any], coordination: Coordination) -> None:
        """An envelope :meth:`on_enqueue` passed was never sent (too large, a failed batch)."""

    def after_outcome(self, envelope: Envelope, coordination: Coordination) -> None:
        """The runner carried out an outcome of ``envelope`` (ran, deferred, retried, dead...)."""

    def before_run(self, ctx: RunContext) -> Outcome | None:
        """An outcome that replaces the run (defer, skip, dead...), or None to go on."""
        return None

    def after_run(self, ctx: RunContext, error: BaseException | None) -> None:
        """Give back what :meth:`before_run` took; called once the job ended (``error``: what it
        raised, if anything), or when a later policy stopped the run."""
