"""Arguments: bind an envelope's args to the job's signature, dropping unknown kwargs if allowed."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..envelope import Envelope
from ..spec import JobSpec, KeyTemplateError

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
_good_shapes: dict[str, set[tuple[int, tuple[str, ...]]]] = {}


def bind(spec: JobSpec, envelope: Envelope) -> tuple[BoundCall, list[str]]:
    """Bound arguments and the names of unknown kwargs that were dropped (rolling deploys)."""
    shape = (len(envelope.args), tuple(envelope.kwargs))
    needs_names = bool(spec.lock or spec.rate_key)
    if not needs_names and shape in _good_shapes.get(spec.name, ()):
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
        shapes = _good_shapes.setdefault(spec.name, set())
        if len(shapes) < 64:
            shapes.add(shape)
    for template in (spec.lock, spec.rate_key):
        if template:
            try:
                spec.render_key(template, bound)
            except KeyTemplateError as exc:
                raise BadArguments(str(exc)) from None
    return BoundCall(bound.args, bound.kwargs, bound.arguments), dropped
