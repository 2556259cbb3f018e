"""Prometheus metrics: their names and labels, the same on every engine, and how each runner
event updates them.

Install with ``pip install 'taskbridge-jobs[metrics]'``. A worker started with ``--metrics-port``
(setting ``metrics_port``) serves ``/metrics`` for every process it runs jobs in (see
:mod:`taskbridge.observability.multiprocess` and :mod:`taskbridge.observability.server`); any
other process (a web app that enqueues) calls :func:`install` and exposes the default registry
its own way.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..outcomes import Reason
from . import events

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("taskbridge.metrics")

JOB_LABELS = ("job_name", "queue")
"""``job_name``, not ``job``: Prometheus gives every scraped series a ``job`` label of its own (the
scrape job), and would rename ours to ``exported_job``."""
OUTCOMES = ("done", "retried", "deferred", "skipped", "expired", "dead")
"""Values of the ``outcome`` label of ``taskbridge_jobs_finished_total``."""
REASONS = (
    "none",
    "error",
    "timeout",
    "worker_lost",
    "invalid",
    "delay",
    "rate_limit",
    "lock",
    "coordination",
    "duplicate",
    "other",
)
"""Values of the ``reason`` label: why a job was retried, dead-lettered, deferred or skipped."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)

_DEFER_REASONS: dict[str, str] = {
    Reason.RATE_LIMIT: "rate_limit",
    Reason.LOCK_BUSY: "lock",
    Reason.DELAY: "delay",
    Reason.STORE_UNREACHABLE: "coordination",
    Reason.DUPLICATE: "duplicate",
    Reason.DUPLICATE_RUNNING: "duplicate",
}


def require_prometheus() -> Any:
    """The prometheus_client module; ConfigurationError naming the extra when it is not installed."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError("metrics need prometheus-client: pip install 'taskbridge-jobs[metrics]'") from None
    return prometheus_client


def available() -> bool:
    """True when prometheus-client is installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def outcome_reason(event: events.Event) -> str:
    """The ``reason`` label of an outcome event: a small fixed set, never free text."""
    if isinstance(event, events.DeferredEvent | events.SkippedEvent):
        return _DEFER_REASONS.get(event.reason, "other")
    if isinstance(event, events.RetriedEvent | events.DeadEvent):
        if event.timed_out:
            return "timeout"
        if event.error_type == "WorkerLost":
            return "worker_lost"
        return "error" if event.error_type else "invalid"
    return "none"


class Metrics:
    """The taskbridge metrics, registered in ``registry`` (default: prometheus-client's global one).

    :meth:`handle` turns one runner event into metric updates; :func:`install` subscribes it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = require_prometheus()
        reg = registry if registry is not None else prom.REGISTRY
        self.registry = reg
        self.enqueued = prom.Counter(
            "taskbridge_jobs_enqueued", "Jobs published by enqueue, enqueue_many and chains", JOB_LABELS, registry=reg
        )
        self.started = prom.Counter("taskbridge_jobs_started", "Job runs started", JOB_LABELS, registry=reg)
        self.finished = prom.Counter(
            "taskbridge_jobs_finished",
            "Messages taken by a worker, by outcome (done, retried, deferred, skipped, expired, dead) and reason",
            (*JOB_LABELS, "outcome", "reason"),
            registry=reg,
        )
        self.exceptions = prom.Counter(
            "taskbridge_job_exceptions",
            "Failed job runs by exception type (JobTimeout for timeouts, WorkerLost when the process died)",
            (*JOB_LABELS, "exception"),
            registry=reg,
        )
        self.duration = prom.Histogram(
            "taskbridge_job_duration_seconds",
            "Run time of jobs that ran (done, retried or dead after running)",
            JOB_LABELS,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.wait = prom.Histogram(
            "taskbridge_job_wait_seconds",
            "Time from when a job was due (enqueued, or its countdown or retry delay over) to its start",
            JOB_LABELS,
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        self.in_progress = prom.Gauge(
            "taskbridge_jobs_in_progress",
            "Jobs running now",
            JOB_LABELS,
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.rate_limited = prom.Counter(
            "taskbridge_rate_limited",
            "Times a job waited for its rate-limit slot: slept in the worker (inline) or republished (deferred)",
            (*JOB_LABELS, "how"),
            registry=reg,
        )
        self.rate_limit_wait = prom.Counter(
            "taskbridge_rate_limit_wait_seconds",
            "Seconds jobs waited for rate-limit slots (inline sleeps and deferrals)",
            JOB_LABELS,
            registry=reg,
        )
        self.lock_contention = prom.Counter(
            "taskbridge_lock_contention",
            "Times a job found its lock or concurrency slot busy, by what happened (deferred or skipped)",
            (*JOB_LABELS, "action"),
            registry=reg,
        )
        self._lock = threading.Lock()
        self._running: set[tuple[Any, Any]] = set()
        self._pid = os.getpid()

    def handle(self, event: events.Event) -> None:
        """Update the metrics for one event (an events subscriber)."""
        if isinstance(event, events.EnqueuedEvent):
            self.enqueued.labels(event.job, event.queue).inc(event.count)
        elif isinstance(event, events.StartedEvent):
            labels = _labels(event)
            self.started.labels(*labels).inc()
            due = max(event.enqueued_at or 0.0, event.not_before or 0.0)
            if due:
                self.wait.labels(*labels).observe(max(0.0, event.time - due))
            with self._lock:
                self._forget_after_fork()
                self._running.add((event.id, event.attempt))
            self.in_progress.labels(*labels).inc()
        elif isinstance(event, events.WaitedEvent):
            if event.reason == Reason.RATE_LIMIT:
                labels = _labels(event)
                self.rate_limited.labels(*labels, "inline").inc()
                self.rate_limit_wait.labels(*labels).inc(event.wait)
        elif isinstance(event, _OUTCOME_EVENTS):
            self._outcome(event)

    def _outcome(self, event: events.OutcomeEvent) -> None:
        kind = event.kind
        labels = _labels(event)
        reason = outcome_reason(event)
        self.finished.labels(*labels, kind, reason).inc()
        with self._lock:
            self._forget_after_fork()
            key = (event.id, event.attempt)
            ran_here = key in self._running
            self._running.discard(key)
        if ran_here:
            self.in_progress.labels(*labels).dec()
        if isinstance(event, events.DoneEvent):
            self.duration.labels(*labels).observe(event.duration)
        elif isinstance(event, events.RetriedEvent | events.DeadEvent) and event.error_type:
            self.exceptions.labels(*labels, event.error_type).inc()
            if event.duration > 0:
                self.duration.labels(*labels).observe(event.duration)
        elif isinstance(event, events.DeferredEvent) and reason == "rate_limit":
            self.rate_limited.labels(*labels, "deferred").inc()
            self.rate_limit_wait.labels(*labels).inc(event.delay)
        if reason == "lock" and kind in ("deferred", "skipped"):
            self.lock_contention.labels(*labels, kind).inc()

    def _forget_after_fork(self) -> None:
        """A forked process runs none of the jobs its parent was running: it starts with no record."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._running = set()


_OUTCOME_EVENTS = (
    events.DoneEvent,
    events.RetriedEvent,
    events.DeferredEvent,
    events.SkippedEvent,
    events.ExpiredEvent,
    events.DeadEvent,
)


def _labels(event: events.MessageEvent) -> tuple[str, str]:
    return (event.job or "unknown", event.queue or "unknown")


_installed: Metrics | None = None
_install_lock = threading.Lock()


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Create the metrics once per process and subscribe them to the runner's events.

    Call it in any process whose enqueues or job runs should be counted; the worker calls it
    itself. In a worker that serves metrics the values go to the multiprocess directory (see
    :func:`taskbridge.observability.multiprocess.use_directory`).
    """
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = Metrics(registry)
            events.subscribe(_installed.handle)
        return _installed


def installed() -> Metrics | None:
    """The metrics of this process, if :func:`install` ran."""
    return _installed


def uninstall() -> None:
    """Stop counting events in this process (the metric objects stay registered)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            events.unsubscribe(_installed.handle)
            _installed = None
