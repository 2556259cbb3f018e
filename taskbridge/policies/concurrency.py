"""Concurrency: at most N runs of a job at a time, cluster-wide (``@job(concurrency=N)``), each run
holding one of N leases in the coordination store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..outcomes import Outcome
from ..spec import JobSpec
from .base import Draft, Policy, RunContext
from .lock import busy, give_back


class Concurrency(Policy):
    name = "concurrency"
    options = ("concurrency",)
    coordinated = True

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        limit = given.get("concurrency")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise draft.invalid(f"option concurrency= must be a whole number >= 1, got {limit!r}")
        return {"concurrency": limit}

    def applies(self, spec: JobSpec) -> bool:
        return bool(spec.concurrency)

    def before_run(self, ctx: RunContext) -> Outcome | None:
        assert ctx.spec.concurrency
        if ctx.coordination.acquire_lease(_key(ctx), ctx.spec.concurrency, ctx.lease_ttl, ctx.owner) is None:
            return busy(ctx)
        return None

    def after_run(self, ctx: RunContext, error: BaseException | None) -> None:
        key = _key(ctx)
        give_back("lease", key, lambda: ctx.coordination.release_lease(key, ctx.owner))


def _key(ctx: RunContext) -> str:
    return f"concurrency:{ctx.spec.name}"
