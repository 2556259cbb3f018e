"""The validated options of one job (:class:`JobSpec`), shared by the decorator, the producer and the runner."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from .backoff import NO_RETRY, Backoff
from .units import Rate

if TYPE_CHECKING:
    from .policies.arguments import BoundCall
    from .scheduling.options import Periodic


class KeyTemplateError(ValueError):
    """A ``lock``/``unique``/``rate_key`` template names an argument the call does not pass."""


class _Default:
    """Marks an option left to the settings' default (``None`` means explicitly none)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()

OnLock = Literal["defer", "skip"]


@dataclass(frozen=True)
class JobSpec:
    """Every option of one job, parsed and validated once at decoration time."""

    name: str
    func: Callable[..., Any]
    queue: str | None = None
    timeout: float | _Default | None = DEFAULT
    hard_timeout: float | None = None
    expires: float | _Default | None = DEFAULT
    retry: Backoff = NO_RETRY
    lock: str | None = None
    lock_ttl: float | None = None
    on_lock: OnLock = "defer"
    unique: str | None = None
    unique_ttl: float | None = None
    concurrency: int | None = None
    rate_limit: Rate | None = None
    rate_key: str | None = None
    drop_unknown_kwargs: bool = True
    result_ttl: float | None = None
    aliases: tuple[str, ...] = ()
    """Older names of the job (a Celery task or Dramatiq actor name) whose messages it also runs."""
    periodic: Periodic | None = None
    """Its schedule, when ``taskbridge scheduler`` enqueues it periodically."""
    needs_coordination: bool = False
    """Whether the job uses state every worker must share: ``@job`` sets it when a policy that keeps
    state in the coordination store applies (:func:`taskbridge.policies.needs_coordination`)."""
    policy_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """The values of policies registered beside the built-in ones, as their ``parse`` returned them,
    by option name; read them with :meth:`option`."""
    signature: inspect.Signature = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signature", inspect.signature(self.func))

    def option(self, name: str, default: Any = None) -> Any:
        """The parsed value of the policy option ``name``: a field of this spec for the built-in
        options (``spec.option("lock") == spec.lock``), otherwise from :attr:`policy_options`;
        ``default`` when the job did not set it."""
        if name in self.policy_options:
            return self.policy_options[name]
        if name in POLICY_FIELDS:
            return getattr(self, name)
        return default

    @property
    def described(self) -> str:
        """The function and its parameters without annotations, for messages: ``send_report(user_id, day='x')``."""
        plain = self.signature.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in self.signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
        return f"{self.func.__qualname__}{plain}"

    def resolved_queue(self, default: str) -> str:
        return self.queue or default

    def resolved_timeout(self, default: float | None) -> float | None:
        return default if isinstance(self.timeout, _Default) else self.timeout

    def resolved_expires(self, default: float | None) -> float | None:
        return default if isinstance(self.expires, _Default) else self.expires

    def accepts_any_kwargs(self) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.signature.parameters.values())

    def bind(self, args: Iterable[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        """Bind arguments to the function's signature (raises TypeError on a mismatch), defaults applied."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def render_key(self, template: str, bound: inspect.BoundArguments | BoundCall) -> str:
        """Fill a ``lock``/``unique``/``rate_key`` template like ``"user:{user_id}"`` from the arguments.

        Names passed through ``**kwargs`` count as arguments; a name this call lacks raises
        :class:`KeyTemplateError`.
        """
        values = dict(bound.arguments)
        for parameter in self.signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                values.update(values.pop(parameter.name, {}))
        try:
            return template.format_map(values)
        except KeyError as exc:
            raise KeyTemplateError(
                f"job {self.name!r}: the key {template!r} needs the argument {exc.args[0]!r}, which this call lacks"
            ) from None


POLICY_FIELDS = frozenset(
    f.name
    for f in fields(JobSpec)
    if f.init
    and f.name
    not in ("name", "func", "queue", "result_ttl", "aliases", "periodic", "needs_coordination", "policy_options")
)
"""The fields of :class:`JobSpec` the built-in policies' ``parse`` fill; ``@job`` sets the others itself."""


def split_parsed(parsed: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the policies' ``parse`` returned, split into :class:`JobSpec` fields and the
    :attr:`JobSpec.policy_options` of the policies registered beside the built-in ones."""
    known = {key: value for key, value in parsed.items() if key in POLICY_FIELDS}
    return known, {key: value for key, value in parsed.items() if key not in POLICY_FIELDS}
