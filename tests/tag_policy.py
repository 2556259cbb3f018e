"""A policy from outside taskbridge, as a project would write one: ``@job(requires_tag="gpu")`` runs
only on workers started with that tag (``WORKER_TAGS=gpu,ssd``); any other worker defers the job,
not as an attempt, so that a tagged worker picks it up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from taskbridge.outcomes import Defer, Outcome
from taskbridge.policies.base import Draft, Policy, RunContext
from taskbridge.spec import JobSpec

TAGS_ENV = "WORKER_TAGS"
"""The environment variable listing a worker's tags, comma-separated."""
RETRY_AFTER = 0.5
"""Seconds an untagged worker puts the job back for."""


class RequiresTag(Policy):
    name = "requires_tag"
    options = ("requires_tag",)

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        tag = given.get("requires_tag")
        if tag is not None and (not isinstance(tag, str) or not tag.isidentifier()):
            raise draft.invalid(f"option requires_tag= must be a tag name like 'gpu', got {tag!r}")
        return {"requires_tag": tag}

    def applies(self, spec: JobSpec) -> bool:
        return spec.option("requires_tag") is not None

    def before_run(self, ctx: RunContext) -> Outcome | None:
        tag = ctx.spec.option("requires_tag")
        if tag in os.environ.get(TAGS_ENV, "").split(","):
            return None
        return Defer(ctx.envelope, RETRY_AFTER, f"needs a worker tagged {tag!r}")
