"""Arguments: bind an envelope's args to the job's signature (dropping unknown kwargs if allowed) and
render the job's key templates once, for the policies that use them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..envelope import Envelope
from ..outcomes import Dead, DeadCause, Outcome
from ..spec import JobSpec, KeyTemplateError
from .base import Draft, Policy, RunContext

log = logging.getLogger("taskbridge.arguments")


class BadArguments(Exception):
    """The envelope's arguments cannot be bound to the job's function."""


@dataclass(frozen=True)
class BoundCall:
    """What the job is called with; ``arguments`` maps parameter names to values for key templates."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    arguments: Mapping[str, Any]


# Whether a call binds depends only on how many positional arguments it has and which keyword
# names; a shape seen to bind cleanly once skips inspect's binding, the runner's costliest step.
# Kept with the function they bound to: a name may be declared again with another function (a test
# in its own job registry), whose shapes start afresh.
_good_shapes: dict[str, tuple[Callable[..., Any], set[tuple[int, tuple[str, ...]]]]] = {}


def bind(spec: JobSpec, envelope: Envelope, *, names: bool = False) -> tuple[BoundCall, list[str]]:
    """Bound arguments and the names of unknown kwargs that were dropped (rolling deploys);
    ``names``: the caller needs :attr:`BoundCall.arguments` (to render key templates)."""
    shape = (len(envelope.args), tuple(envelope.kwargs))
    known = _good_shapes.get(spec.name)
    if not names and known is not None and known[0] is spec.func and shape in known[1]:
        return BoundCall(tuple(envelope.args), envelope.kwargs, {}), []
    kwargs = envelope.kwargs
    dropped: list[str] = []
    if spec.drop_unknown_kwargs and not spec.accepts_any_kwargs():
        params = spec.signature.parameters
        dropped = [
            name for name in kwargs if name not in params or params[name].kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        if dropped:
            log.warning(
                "job %s id %s: dropping unknown keyword arguments %s (sent by an older or newer producer?)",
                spec.name,
                envelope.id,
                ", ".join(sorted(dropped)),
            )
            kwargs = {k: v for k, v in kwargs.items() if k not in dropped}
    try:
        bound = spec.bind(envelope.args, kwargs)
    except TypeError as exc:
        raise BadArguments(f"arguments do not match {spec.described}: {exc}") from None
    if not dropped:
        if known is None or known[0] is not spec.func:
            known = _good_shapes[spec.name] = (spec.func, set())
        if len(known[1]) < 64:
            known[1].add(shape)
    return BoundCall(bound.args, bound.kwargs, bound.arguments), dropped


def render(spec: JobSpec, bound: BoundCall, options: tuple[str, ...]) -> dict[str, str]:
    """The key templates of ``options`` (``lock``, ``rate_key``...) the job sets, filled from ``bound``."""
    keys: dict[str, str] = {}
    for option in options:
        template = spec.option(option)
        if template:
            try:
                keys[option] = spec.render_key(template, bound)
            except KeyTemplateError as exc:
                raise BadArguments(str(exc)) from None
    return keys


class Arguments(Policy):
    """Binds the arguments before the policies that key on them; a call that does not fit the
    function is dead-lettered (it would fail the same way on every attempt)."""

    name = "arguments"
    options = ("drop_unknown_kwargs",)

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        drop = given.get("drop_unknown_kwargs", True)
        if not isinstance(drop, bool):
            raise draft.invalid(f"option drop_unknown_kwargs= must be True or False, got {drop!r}")
        return {"drop_unknown_kwargs": drop}

    def before_run(self, ctx: RunContext) -> Outcome | None:
        needed = ctx.templates
        try:
            ctx.bound, _dropped = bind(ctx.spec, ctx.envelope, names=bool(needed))
            if needed:
                ctx.keys = render(ctx.spec, ctx.bound, needed)
        except BadArguments as exc:
            return Dead(ctx.envelope, str(exc), cause=DeadCause.BAD_ARGUMENTS)
        return None
