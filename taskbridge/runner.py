"""The runner: takes one raw message through the policies, carries out the outcome, reports it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from . import carrying, chains, events
from .config import Settings, get_settings
from .coordination import Coordination, get_coordination
from .coordination.outage import coordination_outage
from .declared import lookup, registry
from .dispatch import publish_dead_letter, schedule
from .duplicates import LOST_ACK_WINDOW, DeliveryClaim, ends_delivery, finished_marks_for
from .engine import Engine
from .envelope import Envelope, decode, peek_job_name, peek_queue
from .errors import ConfigurationError, CoordinationError, EnqueueError, EnvelopeError, JobTimeout
from .outcomes import Dead, DeadCause, Defer, Done, Outcome, Reason, Retry, Skip
from .policies import POLICIES, for_job, retry
from .policies.arguments import Arguments
from .policies.base import Policy, RunContext
from .policies.timeout import soft_timeout
from .producer import enqueue_one
from .signing import signer_for
from .spec import JobSpec
from .tracking import get_tracker, plan_of, traceback_text
from .transports import queue_name_problem
from .unwrapped import Unwrapped
from .wire import envelope_size, unwrap
from .workflows import chunks, groups

log = logging.getLogger("taskbridge.runner")

ARGUMENTS = Arguments()
_AFTER_OUTCOME = POLICIES.hooked("after_outcome")
_LOGGED = ("delay", "reason", "error")
"""The outcome's fields its log line shows, where it has them."""
_WARNED = (Dead, Retry)
"""Outcomes logged as warnings (a tuple: ``Dead | Retry`` would build a union object per message)."""


class Runner:
    """Runs messages for one engine. Adapters call :meth:`run` with each body and acknowledge the
    message only after it returns: the republish or dead-letter write has then succeeded."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings | None = None,
        coordination: Coordination | None = None,
        *,
        soft_timeouts: bool | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or get_settings()
        self.coordination = coordination or get_coordination()
        where = getattr(self.coordination, "where", "in-process")
        self.outage = coordination_outage(where, self.settings.outage_reminder)
        self.soft_timeouts = not engine.facts.native_soft_timeout if soft_timeouts is None else soft_timeouts
        self.signer = signer_for(self.settings)
        self.tracker = get_tracker(self.settings)
        self.finished_marks = finished_marks_for(engine.facts, self.coordination, self.settings.visibility_timeout)

    def check_jobs(self, specs: list[JobSpec] | None = None) -> None:
        """Refuse to start a worker whose jobs cannot behave as declared: a ``hard_timeout`` not
        longer than the timeout the settings give, or, on a multi-process engine, locks and limits
        in a store its processes do not share."""
        specs = specs if specs is not None else [j.spec for j in registry().values()]
        for spec in specs:
            problem = queue_name_problem(spec.resolved_queue(self.settings.default_queue), self.settings)
            if problem:
                raise ConfigurationError(f"job {spec.name!r}: {problem}")
            timeout = spec.resolved_timeout(self.settings.default_timeout)
            if spec.hard_timeout is not None and timeout is not None and spec.hard_timeout <= timeout:
                raise ConfigurationError(
                    f"job {spec.name!r}: hard_timeout ({spec.hard_timeout:g}s) must be longer than its timeout "
                    f"({timeout:g}s, from TASKBRIDGE_DEFAULT_TIMEOUT); pass timeout= to the job"
                )
        if not self.engine.facts.multi_process or self.coordination.shared:
            return
        needy = sorted(s.name for s in specs if s.needs_coordination)
        if needy:
            raise ConfigurationError(
                f"jobs {', '.join(needy)} use locks, concurrency, uniqueness or rate limits, but the "
                f"{self.engine.name} engine runs them in several processes and the coordination store is "
                "in-process memory; set TASKBRIDGE_COORDINATION_URL=redis://... so all workers share it"
            )

    def run(self, raw: str | bytes | dict[str, Any], queue: str | None = None, *, redelivered: bool = False) -> Outcome:
        """Decode, apply the policies, run the job, and carry out the outcome (``raw``: the envelope's
        JSON text, or the JSON object already parsed). ``redelivered``: the transport flags the
        message as handed out before; if that run finished, it does not run again."""
        claim = None
        if self.engine.facts.delivers_finished_again:
            claim = DeliveryClaim(self.coordination, self.settings.visibility_timeout)
        elif redelivered:
            claim = DeliveryClaim(self.coordination, LOST_ACK_WINDOW, look_after=self.finished_marks is not None)
        try:
            decided = self._decide(raw, queue, claim)
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        if claim is not None and claim.stopped is not None:
            return self._carry_out_copy(claim.stopped, queue)
        outcome = self.tracker.settle(chains.checked(decided))
        carrying.store(lambda: self._carry_out(outcome, queue), outcome, queue, self.settings)
        if self.finished_marks is not None and outcome.envelope is not None and ends_delivery(outcome):
            self.finished_marks.add(outcome.envelope)
        elif claim is not None:
            claim.finish(outcome)
        self._report(outcome, queue)
        return outcome

    def _carry_out_copy(self, outcome: Outcome, queue: str | None) -> Outcome:
        """A copy of a delivery that finished or runs elsewhere: nothing of a run's after-effects
        (results, groups, chains, uniqueness marks); a copy of a running one is republished later."""
        if isinstance(outcome, Defer):
            carrying.store(
                lambda: schedule(self.engine, [outcome.envelope], outcome.delay, self.settings),
                outcome,
                queue,
                self.settings,
            )
        self._report(outcome, queue)
        return outcome

    def run_item(
        self,
        body: bytes | str,
        queue: str,
        *,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
        redelivered: bool = False,
    ) -> Outcome:
        """An item exactly as the transport holds it, read from ``queue``: run the envelope inside
        whichever engine's wrapper carries it, or dead-letter the item to ``queue``'s dead letters.
        ``content_type`` and ``headers`` are the transport's message properties where it has them
        (AMQP): the headers name the task of a legacy Celery message (see :mod:`.legacy`)."""
        item = unwrap(body, content_type=content_type, headers=headers)
        if item.payload is None:
            return self._dead_letter(body, f"unreadable message: {item.reason}", queue, DeadCause.UNREADABLE)
        limit = self.engine.facts.max_message_size
        if _may_exceed(body, item, limit):
            size = envelope_size(item.payload)
            if size > limit:
                # Checked here, as a producer checks at enqueue: a job that runs could not store its retry.
                transport = self.engine.name
                reason = f"the envelope is {size} bytes, over the {limit}-byte limit of the {transport} transport"
                return self._dead_letter(body, reason, queue, DeadCause.TOO_LARGE)
        return self.run(item.payload, queue, redelivered=redelivered)

    def dead_letter(self, raw: bytes | str, reason: str, queue: str | None) -> Outcome:
        """Write an item that cannot run to ``queue``'s dead letters with ``reason`` and its original
        bytes (base64 when they are not UTF-8), without running anything. Like :meth:`run` it
        retries a failed write until it is stored; a caller that must not block (an engine's event
        loop) calls it inside :func:`taskbridge.carrying.without_holding` and requeues on failure."""
        return self._dead_letter(raw, reason, queue, DeadCause.ENGINE)

    def _dead_letter(self, raw: bytes | str, reason: str, queue: str | None, cause: DeadCause) -> Outcome:
        outcome = Dead(None, reason, raw=raw, cause=cause)
        carrying.store(lambda: self._carry_out(outcome, queue), outcome, queue, self.settings)
        self._report(outcome, queue)
        return outcome

    def fail_killed(
        self, raw: str | bytes, reason: str, *, timed_out: bool = False, queue: str | None = None
    ) -> Outcome:
        """The engine killed the job (hard timeout, lost child): retry or dead-letter it per its policy."""
        try:
            envelope = decode(raw)
        except EnvelopeError as exc:
            outcome: Outcome = Dead(None, f"malformed message: {exc}", raw=raw, cause=DeadCause.MALFORMED)
        else:
            handle = lookup(envelope.job)
            unsigned = self.signer.verify(envelope) if self.signer else None
            if unsigned:
                outcome = Dead(None, unsigned, raw=raw, cause=DeadCause.UNSIGNED)
            elif handle is None:
                outcome = Dead(envelope, f"unknown job {envelope.job!r}", cause=DeadCause.UNKNOWN_JOB)
            else:
                self._release_after_kill(handle.spec, envelope)
                outcome = self.tracker.settle(self._failed(handle.spec, envelope, None, reason, 0.0, timed_out))
        carrying.store(lambda: self._carry_out(outcome, queue), outcome, queue, self.settings)
        if outcome.envelope is not None and self.finished_marks is not None:
            self.finished_marks.add(outcome.envelope)
        self._report(outcome)
        return outcome

    def _release_after_kill(self, spec: JobSpec, envelope: Envelope) -> None:
        """Give back what the killed run held (its lock, its lease), under the run's owner token."""
        policies, templates = for_job(spec)
        holders = [policy for policy in policies if policy.holds]
        if not holders:
            return
        timeout = spec.resolved_timeout(self.settings.default_timeout)
        ctx = RunContext(spec, envelope, self.settings, self.coordination, timeout, self._waited, templates)
        if ARGUMENTS.before_run(ctx) is not None:
            return
        self._release(holders, ctx, None)

    def _decide(self, raw: str | bytes | dict[str, Any], queue: str | None, claim: DeliveryClaim | None) -> Outcome:
        try:
            envelope = decode(raw)
        except EnvelopeError as exc:
            return Dead(None, f"malformed message: {exc}", raw=_dumped(raw), cause=DeadCause.MALFORMED)
        if self.signer is not None:
            unsigned = self.signer.verify(envelope)
            if unsigned:
                # Nothing in the envelope is trusted, not even its queue: dead-letter the bytes.
                return Dead(None, unsigned, raw=_dumped(raw), cause=DeadCause.UNSIGNED)
        handle = lookup(envelope.job)
        if handle is None:
            return Dead(
                envelope,
                f"unknown job {envelope.job!r}: no job of that name is declared in this worker",
                cause=DeadCause.UNKNOWN_JOB,
            )
        if claim is not None:
            try:
                copy = claim.take(envelope)
            except CoordinationError as exc:
                # Runs unchecked, as a job that needs no store does: at least once, as the transport.
                self.outage.failed(exc)
            else:
                self.outage.succeeded()
                if copy is not None:
                    return copy
        spec = handle.spec
        policies, templates = for_job(spec)
        if envelope.headers:  # a fan-out chunk's marker is a header
            try:
                held = chunks.held_back(envelope, self.coordination)
            except CoordinationError as exc:
                return self._store_down(envelope, exc)
            if held is not None:
                return held
        timeout = spec.resolved_timeout(self.settings.default_timeout)
        ctx = RunContext(spec, envelope, self.settings, self.coordination, timeout, self._waited, templates)
        passed: list[Policy] = []  # those that hold something until the run ends
        asked_store = False
        try:
            for policy in policies:
                asked_store = asked_store or policy.coordinated
                stop = policy.before_run(ctx)
                if stop is not None:
                    self._release(passed, ctx, None)
                    if asked_store and spec.needs_coordination:
                        self.outage.succeeded()
                    return stop
                if policy.holds:
                    passed.append(policy)
        except CoordinationError as exc:
            self._release(passed, ctx, None)
            return self._store_down(ctx.envelope, exc)
        if asked_store:
            self.outage.succeeded()
        envelope = ctx.envelope
        plan = plan_of(envelope, self.settings)
        if plan is not None and not self.tracker.started(envelope, plan):
            self._release(passed, ctx, None)
            return Skip(envelope, Reason.CANCELLED)
        if events.has_subscribers():
            events.emit(events.StartedEvent.about(envelope))
        bound = ctx.bound
        assert bound is not None
        started = time.monotonic()
        error: BaseException | None = None
        try:
            with soft_timeout(timeout if self.soft_timeouts else None):
                value = spec.func(*bound.args, **bound.kwargs)
        except Exception as exc:
            error = exc
            duration = time.monotonic() - started
            events.emit_exception(exc, events.RaisedEvent.about(envelope))
            return self._failed(spec, envelope, exc, _describe(exc), duration, isinstance(exc, JobTimeout))
        finally:
            if passed:
                self._release(passed, ctx, error)
        return Done(envelope, time.monotonic() - started, value)

    @staticmethod
    def _release(passed: list[Policy], ctx: RunContext, error: BaseException | None) -> None:
        for policy in reversed(passed):
            policy.after_run(ctx, error)

    @staticmethod
    def _waited(envelope: Envelope, reason: Reason, seconds: float) -> None:
        events.emit(events.WaitedEvent.about(envelope, reason=reason, wait=seconds))

    def _store_down(self, envelope: Envelope, error: CoordinationError) -> Outcome:
        """The job needs the coordination store and it is unreachable: never run it unguarded; try
        again later, with back-off, without counting an attempt."""
        return Defer(envelope, self.outage.failed(error), Reason.STORE_UNREACHABLE)

    def _failed(
        self,
        spec: JobSpec,
        envelope: Envelope,
        error: BaseException | None,
        reason: str,
        duration: float,
        timed_out: bool,
    ) -> Outcome:
        if retry.should_retry(spec, envelope.attempt, error):
            wait = retry.delay(spec, envelope.attempt)
            return Retry(
                envelope, wait, reason, duration, timed_out, _error_type(error, timed_out), traceback_text(error)
            )
        attempts = envelope.attempt
        why = f"failed on attempt {attempts} of {spec.retry.max_retries + 1}: {reason}"
        return Dead(
            envelope,
            why,
            duration=duration,
            timed_out=timed_out,
            error_type=_error_type(error, timed_out),
            traceback=traceback_text(error),
        )

    def _carry_out(self, outcome: Outcome, queue: str | None) -> None:
        if isinstance(outcome, Retry):
            next_attempt = outcome.envelope.with_changes(attempt=outcome.envelope.attempt + 1)
            schedule(self.engine, [next_attempt], outcome.delay, self.settings)
            return
        if isinstance(outcome, Defer):
            schedule(self.engine, [outcome.envelope], outcome.delay, self.settings)
            return
        if isinstance(outcome, Dead):
            env = outcome.envelope
            peeked = peek_queue(outcome.raw) if env is None and outcome.raw is not None else None
            # An item that is not a valid envelope goes next to the queue it was read from.
            target = (env.queue if env else queue) or peeked or self.settings.default_queue
            publish_dead_letter(
                self.engine,
                queue=target,
                reason=outcome.reason,
                envelope=env,
                raw=outcome.raw,
                settings=self.settings,
                traceback=outcome.traceback,
            )
        if isinstance(outcome, Done) and outcome.envelope.chain:
            self._continue_chain(outcome.envelope, outcome.value)
        groups.member_ended(outcome, self.coordination)
        envelope = outcome.envelope
        if envelope is not None:
            for policy in _AFTER_OUTCOME:
                policy.after_outcome(envelope, self.coordination)

    def _continue_chain(self, envelope: Envelope, value: Any) -> None:
        step, args, rest = chains.next_call(envelope, value)
        handle = lookup(step["job"])
        if handle is None:
            reason = f"chain step {step['job']!r} is not declared"
        else:
            try:
                enqueue_one(handle.spec, tuple(args), dict(step.get("kwargs", {})), chain=rest)
                return
            except EnqueueError as exc:
                # Raising would leave the finished job unacknowledged, to run again and fail here again.
                reason = f"chain step {step['job']!r} cannot be enqueued: {exc}"
        publish_dead_letter(
            self.engine, queue=envelope.queue, reason=reason, envelope=envelope, raw=None, settings=self.settings
        )

    def _report(self, outcome: Outcome, queue: str | None = None) -> None:
        level = logging.WARNING if isinstance(outcome, _WARNED) else logging.INFO
        logged = log.isEnabledFor(level)
        listened = events.has_subscribers()
        if not logged and not listened:
            return
        envelope = outcome.envelope
        job = envelope.job if envelope is not None else None
        if isinstance(outcome, Dead) and envelope is None and outcome.raw is not None:
            job, queue = peek_job_name(outcome.raw), queue or peek_queue(outcome.raw)
        if logged:
            log.log(
                level,
                "job=%s id=%s attempt=%s outcome=%s duration=%.3f%s",
                job,
                envelope.id if envelope is not None else None,
                envelope.attempt if envelope is not None else None,
                outcome.kind,
                getattr(outcome, "duration", 0.0),
                "".join(f" {k}={_plain(getattr(outcome, k))!r}" for k in _LOGGED if hasattr(outcome, k)),
            )
        if listened:
            events.emit(events.outcome_event(outcome, job, queue))


def _plain(value: Any) -> Any:
    """A reason as the plain string logs always showed (``'rate limit'``, not the enum member)."""
    return str(value) if isinstance(value, Reason) else value


def _error_type(error: BaseException | None, timed_out: bool) -> str | None:
    if error is not None:
        return type(error).__name__
    return "JobTimeout" if timed_out else "WorkerLost"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, JobTimeout):
        return "JobTimeout: the job ran past its timeout"
    return f"{type(exc).__name__}: {exc}"


def _dumped(raw: str | bytes | dict[str, Any]) -> str | bytes:
    return json.dumps(raw, separators=(",", ":"), default=repr) if isinstance(raw, dict) else raw


def _may_exceed(body: bytes | str, item: Unwrapped, limit: int) -> bool:
    """Whether the envelope ``item`` carries could be over ``limit`` as a producer writes it (ASCII-only
    JSON), judged from lengths alone so a normal message is not encoded again: escaping writes at most
    12 characters per code point (a surrogate pair) and 6 per UTF-8 byte (a control character)."""
    payload = item.payload
    if isinstance(payload, str):
        return len(payload) * 12 > limit
    if item.form == "envelope":
        return len(body) * (12 if isinstance(body, str) else 6) > limit
    return True
