"""Arguments: bind an envelope's args to the job's signature, dropping unknown kwargs if allowed."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ..envelope import Envelope
from ..job import JobSpec, KeyTemplateError

log = logging.getLogger("taskbridge.arguments")


class BadArguments(Exception):
    """The envelope's arguments cannot be bound to the job's function."""


def bind(spec: JobSpec, envelope: Envelope) -> tuple[inspect.BoundArguments, list[str]]:
    """Bound arguments and the names of unknown kwargs that were dropped (rolling deploys)."""
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
    for template in (spec.lock, spec.rate_key):
        if template:
            try:
                spec.render_key(template, bound)
            except KeyTemplateError as exc:
                raise BadArguments(str(exc)) from None
    return bound, dropped


def call_arguments(bound: inspect.BoundArguments) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return bound.args, bound.kwargs
