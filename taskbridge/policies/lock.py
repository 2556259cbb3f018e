"""Lock: at most one run per lock key at a time, cluster-wide (``@job(lock="user:{user_id}")``); a run
that finds it held is deferred or skipped (``on_lock``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..errors import CoordinationError
from ..outcomes import Defer, Outcome, Reason, Skip
from ..spec import JobSpec
from .base import Draft, Policy, RunContext

log = logging.getLogger("taskbridge.runner")


def busy(ctx: RunContext) -> Outcome:
    """What a run whose lock or concurrency lease is held becomes: skipped, or deferred (``on_lock``)."""
    if ctx.spec.on_lock == "skip":
        return Skip(ctx.envelope, Reason.LOCK_BUSY)
    return Defer(ctx.envelope, ctx.settings.lock_retry, Reason.LOCK_BUSY)


def give_back(what: str, key: str, release: Any) -> None:
    """Release a lock or lease; what the store cannot take back now expires with its TTL."""
    try:
        release()
    except CoordinationError as exc:
        log.warning("%s %s could not be released (%s); it expires by itself", what, key, exc)


class Lock(Policy):
    name = "lock"
    options = ("lock", "lock_ttl", "on_lock")
    templates = ("lock",)
    coordinated = True

    def parse(self, draft: Draft, given: Mapping[str, Any]) -> dict[str, Any]:
        lock, on_lock = given.get("lock"), given.get("on_lock", "defer")
        lock_ttl = draft.seconds("lock_ttl", given.get("lock_ttl"))
        if on_lock not in ("defer", "skip"):
            raise draft.invalid(f"option on_lock= must be 'defer' or 'skip', got {on_lock!r}")
        if lock is not None:
            draft.template("lock", lock)
        return {"lock": lock, "lock_ttl": lock_ttl, "on_lock": on_lock}

    def applies(self, spec: JobSpec) -> bool:
        return bool(spec.lock)

    def before_run(self, ctx: RunContext) -> Outcome | None:
        if ctx.coordination.acquire_lock(_key(ctx), ctx.lease_ttl, ctx.owner) is None:
            return busy(ctx)
        return None

    def after_run(self, ctx: RunContext, error: BaseException | None) -> None:
        key = _key(ctx)
        give_back("lock", key, lambda: ctx.coordination.release_lock(key, ctx.owner))


def _key(ctx: RunContext) -> str:
    return f"lock:{ctx.keys['lock']}"
