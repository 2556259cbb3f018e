"""Job tracking: who is tracked, and the records written at enqueue, start and finish.

A job is tracked when it keeps its result (``@job(result_ttl=...)`` or the ``result_ttl``
setting) or when the ``track_jobs`` setting is on. The producer decides and says so in the
envelope's ``track`` header, so workers with other settings keep the same records.

Records live in the coordination store's server (Redis), or in this process for the embedded
engine. A store that cannot be reached never stops a job: enqueue and the runner carry on, the
record is missing (status ``unknown``), and writes are skipped for :data:`PAUSE_AFTER_FAILURE`
seconds so that an outage does not slow every enqueue down.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Settings, get_settings
from ..declared import lookup
from ..envelope import Envelope, encode_json
from ..errors import CoordinationError
from ..outcomes import Dead, DeadCause, Done, Expired, Outcome, Reason, Retry, Skip
from ..spec import JobSpec
from ..transports import kind_of
from .base import TrackingStore
from .memory import MemoryTracking
from .record import CANCELLABLE, FINISHED, STATES, Fields, JobError, JobRecord, State

__all__ = [
    "CANCELLABLE",
    "FINISHED",
    "STATES",
    "JobError",
    "JobRecord",
    "Plan",
    "State",
    "Tracker",
    "TrackingStore",
    "get_tracker",
]

log = logging.getLogger("taskbridge.tracking")

HEADER = "track"
PAUSE_AFTER_FAILURE = 5.0
TRACEBACK_LIMIT = 8000
"""Characters of traceback text kept (its end, where the error is)."""


@dataclass(frozen=True)
class Plan:
    """How one job is tracked: ``keep`` seconds of record after it finishes, and whether its
    return value is kept (then it must be JSON)."""

    keep: float
    results: bool

    def header(self) -> dict[str, Any]:
        return {"keep": self.keep, "results": self.results}


def plan_for(spec: JobSpec, settings: Settings) -> Plan | None:
    """The tracking the producer asks for: results kept for ``result_ttl`` (the job's, else the
    setting's), else a record for ``track_ttl`` when ``track_jobs`` is on, else None."""
    result_ttl = spec.result_ttl if spec.result_ttl is not None else settings.result_ttl
    if result_ttl is not None:
        return Plan(result_ttl, True)
    if settings.track_jobs:
        return Plan(settings.track_ttl, False)
    return None


_plans: dict[tuple[float, bool], Plan] = {}


def plan_of(envelope: Envelope, settings: Settings) -> Plan | None:
    """The tracking of a message a worker got: what its producer asked for, else this worker's own."""
    asked = envelope.headers.get(HEADER)
    if isinstance(asked, dict):
        try:
            key = (float(asked["keep"]), bool(asked["results"]))
        except (KeyError, TypeError, ValueError):
            pass
        else:
            plan = _plans.get(key)
            if plan is None:
                plan = Plan(*key)
                if len(_plans) < 256:
                    _plans[key] = plan
            return plan
    handle = lookup(envelope.job)
    return plan_for(handle.spec, settings) if handle is not None else None


def _ttl(plan: Plan, envelope: Envelope, settings: Settings, now: float) -> float:
    """While a job waits or runs, its record lasts until its expiry plus the longer of ``keep``
    and ``track_ttl``."""
    waiting = max(0.0, envelope.expires_at - now) if envelope.expires_at is not None else 0.0
    return waiting + max(plan.keep, settings.track_ttl)


def _error_fields(error: str, error_type: str | None, trace: str | None) -> Fields:
    kind = error_type or "Dead"
    _, found, message = error.partition(f"{kind}: ")
    fields = {"error_type": kind, "error": message if found else error}
    if trace:
        fields["traceback"] = trace[-TRACEBACK_LIMIT:]
    return fields


def traceback_text(error: BaseException | None) -> str | None:
    """The formatted traceback of ``error``, as ``JobFailed.traceback`` shows it."""
    if error is None:
        return None
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


class Tracker:
    """Writes job records for one process: at enqueue, when a run starts, when it ends."""

    def __init__(self, store: TrackingStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._paused_until = 0.0
        self._lock = threading.Lock()

    # -- producer side -------------------------------------------------------------------
    def enqueued(self, envelopes: Sequence[Envelope], plan: Plan) -> None:
        """Create the records of envelopes about to be published. On Redis the write is queued
        and sent with others; it sets only the fields a record lacks, so a worker's faster write
        is never undone, and this process reads its own writes."""
        now = time.time()
        records = []
        for envelope in envelopes:
            scheduled = envelope.not_before is not None and envelope.not_before > now
            fields: Fields = {
                "job": envelope.job,
                "queue": envelope.queue,
                "state": "scheduled" if scheduled else "queued",
                "attempts": "0",
                "enqueued_at": repr(envelope.enqueued_at),
                "keep": repr(plan.keep),
                "keeps_result": "1" if plan.results else "0",
            }
            if envelope.not_before is not None:
                fields["not_before"] = repr(envelope.not_before)
            if envelope.expires_at is not None:
                fields["expires_at"] = repr(envelope.expires_at)
            records.append((envelope.id, fields, _ttl(plan, envelope, self.settings, now)))
        self._guarded(lambda: self.store.create(records))

    # -- worker side ---------------------------------------------------------------------
    def started(self, envelope: Envelope, plan: Plan) -> bool:
        """Mark the run as started; False when the job was cancelled (the runner then skips it).
        No round trip on Redis: the cancellations are known in memory and the write is queued.
        When the store cannot tell, the job runs: a job is never lost because tracking failed."""
        if self.store.cancelled(envelope.id):
            return False
        now = time.time()
        fields = {"state": "running", "attempts": str(envelope.attempt), "started_at": repr(now)}
        ttl = _ttl(plan, envelope, self.settings, now)
        self._guarded(lambda: self.store.update(envelope.id, fields, ttl, notify=False, guard=False, wait=False))
        return True

    def settle(self, outcome: Outcome) -> Outcome:
        """Record ``outcome`` before the runner carries it out (a retry's record is written before it
        is republished; the others are queued). A ``Done`` whose return value must be kept but is
        not JSON becomes ``Dead``, with the reason."""
        envelope = outcome.envelope
        if envelope is None or not isinstance(outcome, _RECORDED):
            return outcome
        plan = plan_of(envelope, self.settings)
        if plan is None or (isinstance(outcome, Skip) and outcome.reason == CANCELLED):
            return outcome
        now = time.time()
        fields: Fields = {"attempts": str(envelope.attempt)}
        if isinstance(outcome, Done):
            fields["state"] = "done"
            if plan.results:
                try:
                    fields["result"] = encode_json(outcome.value)
                except (TypeError, ValueError) as exc:
                    outcome = _not_json(envelope, outcome, exc)
                    fields = {"attempts": str(envelope.attempt)}
        if isinstance(outcome, Retry):
            fields.update(state="failed", not_before=repr(now + outcome.delay))
            fields.update(_error_fields(outcome.error, outcome.error_type, outcome.traceback))
        elif isinstance(outcome, Dead):
            fields["state"] = "dead"
            fields.update(_error_fields(outcome.reason, outcome.error_type, outcome.traceback))
        elif isinstance(outcome, Expired):
            fields["state"] = "expired"
        elif isinstance(outcome, Skip):
            fields.update(state="cancelled", reason=outcome.reason)
        finished = fields["state"] in FINISHED
        if finished:
            fields["finished_at"] = repr(now)
        ttl = plan.keep if finished else _ttl(plan, envelope, self.settings, now)
        notify = finished and plan.results  # only jobs that keep results have waiters
        # A record that says cancelled changes only by a run that started after all.
        guard = isinstance(outcome, Expired | Skip) or (isinstance(outcome, Dead) and outcome.error_type is None)
        retry = isinstance(outcome, Retry)
        self._guarded(lambda: self.store.update(envelope.id, fields, ttl, notify=notify, guard=guard, wait=retry))
        return outcome

    def _guarded(self, write: Any) -> Any:
        """Run one store call unless writes are paused after a failure; None when skipped or failed."""
        if self._paused_until and time.monotonic() < self._paused_until:
            return None
        try:
            result = write()
        except CoordinationError as exc:
            with self._lock:
                first = not self._paused_until
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "job records are not written while the store is unreachable (%s); jobs run as usual "
                "and report status 'unknown'",
                exc,
            )
            return None
        if self._paused_until:
            with self._lock:
                self._paused_until = 0.0
            log.warning("job records are written again: %s is reachable", self.store.where)
        return result


_RECORDED = (Done, Retry, Dead, Expired, Skip)
"""The outcomes a job record shows (a tuple: a union of them would be built on every message)."""

CANCELLED = Reason.CANCELLED
"""The reason of the ``Skip`` outcome of a cancelled job."""


def _not_json(envelope: Envelope, done: Done, exc: Exception) -> Dead:
    reason = (
        f"job {envelope.job!r} returned {type(done.value).__name__}, which is not JSON ({exc}); a job that keeps "
        "its result (result_ttl) must return JSON: dicts, lists, strings, numbers, booleans or None"
    )
    return Dead(envelope, reason, duration=done.duration, error_type="ResultNotJSON", cause=DeadCause.BAD_RESULT)


def open_store(settings: Settings) -> TrackingStore:
    """The tracking store beside the coordination store: Redis when that is Redis, else memory."""
    url = settings.effective_coordination_url
    if kind_of(url) == "memory":
        return _memory_store()
    from .redis import RedisTracking

    return RedisTracking(url, settings.namespace)


_memory: MemoryTracking | None = None
_lock = threading.Lock()
_trackers: dict[int, tuple[Settings, Tracker]] = {}


def _memory_store() -> MemoryTracking:
    global _memory
    with _lock:
        if _memory is None:
            _memory = MemoryTracking()
        return _memory


def get_tracker(settings: Settings | None = None) -> Tracker:
    """This process's tracker for ``settings`` (default: the current settings); built on first use."""
    settings = settings or get_settings()
    with _lock:
        held = _trackers.get(id(settings))
        if held is not None and held[0] is settings:
            return held[1]
    tracker = Tracker(open_store(settings), settings)
    with _lock:
        held = _trackers.get(id(settings))
        if held is not None and held[0] is settings:
            tracker.store.close()
            return held[1]
        if len(_trackers) > 16:
            _trackers.clear()
        _trackers[id(settings)] = (settings, tracker)
        return tracker
