"""Uniqueness: a second enqueue of a job is dropped while an equal one is pending
(``@job(unique=True)`` per arguments, or a key template like ``unique="report:{day}"``)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..coordination import Coordination
from ..envelope import Envelope
from ..errors import CoordinationError, EnqueueError
from ..spec import JobSpec, KeyTemplateError
from .base import Draft, EnqueueCall, Policy

log = logging.getLogger("taskbridge.publish")

HEADER = "unique"
"""Envelope header holding the uniqueness key the producer claimed."""


def unique_key(spec: JobSpec, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """The uniqueness key of one call: the rendered template, or a digest of the bound arguments
    (so ``f(1)`` and ``f(x=1)`` are the same call)."""
    bound = spec.bind(args, kwargs)
    if spec.unique:
        try:
            return f"unique:{spec.name}:{spec.render_key(spec.unique, bound)}"
        except KeyTemplateError as exc:
            raise EnqueueError(str(exc)) from None
    digest = hashlib.sha1(json.dumps(bound.arguments, sort_keys=True).encode()).hexdigest()
    return f"unique:{spec.name}:{digest}"


class Unique(Policy):
    name = "unique"
    options = ("unique", "unique_ttl")
    coordinated = True

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        unique = given.get("unique", False)
        ttl = draft.seconds("unique_ttl", given.get("unique_ttl"))
        template = None
        if unique is True:
            template = ""
        elif isinstance(unique, str) and unique:
            template = draft.template("unique", unique)
        elif unique not in (False, None, ""):
            raise draft.invalid(f"option unique= must be True or a key template, got {unique!r}")
        return {"unique": template, "unique_ttl": ttl}

    def applies(self, spec: JobSpec) -> bool:
        return spec.unique is not None

    def on_enqueue(self, call: EnqueueCall) -> bool:
        key = unique_key(call.spec, call.args, call.kwargs)
        ttl = call.spec.unique_ttl or call.wait
        if not call.coordination.claim_unique(key, math.ceil(ttl)):
            log.info("job %s: not enqueued, %s is already pending", call.spec.name, key)
            return False
        call.headers[HEADER] = key
        return True

    def enqueue_undone(self, headers: Mapping[str, Any], coordination: Coordination) -> None:
        coordination.release_unique(headers[HEADER])

    def after_outcome(self, envelope: Envelope, coordination: Coordination) -> None:
        key = envelope.headers.get(HEADER)
        if key is None:
            return
        try:
            coordination.release_unique(key)
        except CoordinationError as exc:
            log.warning("job %s: its uniqueness mark stays until it expires (%s)", envelope.job, exc)
