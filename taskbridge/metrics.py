"""Prometheus metrics: the same names and labels on every engine, fed by the runner's events.

Install with ``pip install 'taskbridge-jobs[metrics]'``. A worker started with ``--metrics-port``
(setting ``metrics_port``) serves ``/metrics``; any other process (a web app that enqueues)
calls :func:`install` and exposes the default registry its own way.

Workers run jobs in several processes (Celery prefork, Dramatiq processes), so the worker uses
prometheus-client's multiprocess mode: every process writes its values to files in one directory
and the metrics server adds them up on each scrape. Two known pitfalls of that mode are handled
here: the directory is emptied when the worker starts, and the files of processes that exited
are merged into one archive file per metric type (and removed), so the directory and the cost of a
scrape do not grow with the number of processes restarted. Files are named after the process id
plus a random suffix, so a reused process id never writes into a dead process's file.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import events
from .errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("taskbridge.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: the directory where each process writes its values."""

ACTIVE_ENV = "TASKBRIDGE_METRICS_ACTIVE"
"""Set by the worker when it serves metrics, so processes it starts collect them too."""

JOB_LABELS = ("job_name", "queue")
"""``job_name``, not ``job``: Prometheus gives every scraped series a ``job`` label of its own (the
scrape job), and would rename ours to ``exported_job``."""
OUTCOMES = ("done", "retried", "deferred", "skipped", "expired", "dead")
"""Values of the ``outcome`` label of ``taskbridge_jobs_finished_total``."""
REASONS = ("none", "error", "timeout", "worker_lost", "invalid", "delay", "rate_limit", "lock", "other")
"""Values of the ``reason`` label: why a job was retried, dead-lettered, deferred or skipped."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)

_DEFER_REASONS = {
    "rate limit": "rate_limit",
    "lock busy": "lock",
    "delay": "delay",
    "coordination store unreachable": "coordination",
}


def _prometheus() -> Any:
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
    kind = event.get("event")
    if kind in ("deferred", "skipped"):
        return _DEFER_REASONS.get(str(event.get("reason") or ""), "other")
    if kind in ("retried", "dead"):
        if event.get("timed_out"):
            return "timeout"
        error_type = event.get("error_type")
        if error_type == "WorkerLost":
            return "worker_lost"
        return "error" if error_type else "invalid"
    return "none"


class Metrics:
    """The taskbridge metrics, registered in ``registry`` (default: prometheus-client's global one).

    :meth:`handle` turns one runner event into metric updates; :func:`install` subscribes it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
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

    def handle(self, event: events.Event) -> None:
        """Update the metrics for one event (an events subscriber)."""
        kind = event.get("event")
        labels = (str(event.get("job") or "unknown"), str(event.get("queue") or "unknown"))
        if kind == "enqueued":
            self.enqueued.labels(*labels).inc(event.get("count", 1))
        elif kind == "started":
            self.started.labels(*labels).inc()
            due = max(float(event.get("enqueued_at") or 0.0), float(event.get("not_before") or 0.0))
            if due:
                self.wait.labels(*labels).observe(max(0.0, float(event.get("time", time.time())) - due))
            with self._lock:
                self._running.add((event.get("id"), event.get("attempt")))
            self.in_progress.labels(*labels).inc()
        elif kind == "waited":
            if event.get("reason") == "rate limit":
                self.rate_limited.labels(*labels, "inline").inc()
                self.rate_limit_wait.labels(*labels).inc(float(event.get("wait") or 0.0))
        elif kind in OUTCOMES:
            self._outcome(str(kind), labels, event)

    def _outcome(self, kind: str, labels: tuple[str, str], event: events.Event) -> None:
        reason = outcome_reason(event)
        self.finished.labels(*labels, kind, reason).inc()
        with self._lock:
            key = (event.get("id"), event.get("attempt"))
            ran_here = key in self._running
            self._running.discard(key)
        if ran_here:
            self.in_progress.labels(*labels).dec()
        error_type = event.get("error_type")
        if kind in ("retried", "dead") and error_type:
            self.exceptions.labels(*labels, str(error_type)).inc()
        duration = float(event.get("duration") or 0.0)
        if kind == "done" or (kind in ("retried", "dead") and error_type and duration > 0):
            self.duration.labels(*labels).observe(duration)
        if kind == "deferred" and reason == "rate_limit":
            self.rate_limited.labels(*labels, "deferred").inc()
            self.rate_limit_wait.labels(*labels).inc(float(event.get("delay") or 0.0))
        if reason == "lock" and kind in ("deferred", "skipped"):
            self.lock_contention.labels(*labels, kind).inc()

    def forget_running(self) -> None:
        """Drop the record of jobs running in this process (a forked child runs none of its parent's)."""
        self._lock = threading.Lock()
        self._running = set()


_installed: Metrics | None = None
_install_lock = threading.Lock()


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Create the metrics once per process and subscribe them to the runner's events.

    Call it in any process whose enqueues or job runs should be counted; the worker calls it
    itself. In a worker that serves metrics it runs in multiprocess mode (see :func:`use_directory`).
    """
    global _installed
    with _install_lock:
        if _installed is None:
            if os.environ.get(MULTIPROC_ENV):
                _use_named_files()
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


def _after_fork_in_child() -> None:
    if _installed is not None:
        _installed.forget_running()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- multiprocess mode -------------------------------------------------------------------------

_identity: dict[str, Any] = {"pid": None, "id": None}


def process_identifier() -> str:
    """This process's name in metric file names: ``<pid>-<random>``, new after each fork.

    The random part keeps a process that reuses a dead process's id from writing into (and
    racing the archiving of) the dead process's files.
    """
    pid = os.getpid()
    if _identity["pid"] != pid:
        _identity["pid"] = pid
        _identity["id"] = f"{pid}-{os.urandom(4).hex()}"
    return str(_identity["id"])


def use_directory(path: str | Path | None = None, *, wipe: bool = True) -> Path:
    """Put this process and every process it starts in multiprocess mode, writing to ``path``.

    ``path`` defaults to ``$PROMETHEUS_MULTIPROC_DIR``, else a new private temporary directory.
    With ``wipe`` (the default), values left by an earlier run are removed: one directory belongs
    to one metrics server. Call it before any metric is created.
    """
    given = path or os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        if wipe:
            for stale in glob.glob(str(directory / "*.db")) + glob.glob(str(directory / "*.db.new")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
    else:
        _remove_abandoned_directories()
        directory = Path(tempfile.mkdtemp(prefix=f"taskbridge-metrics-{os.getpid()}-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    _use_named_files()
    return directory


def _remove_abandoned_directories() -> None:
    """Remove private directories of workers that died without cleaning up (SIGKILL)."""
    for candidate in glob.glob(os.path.join(tempfile.gettempdir(), "taskbridge-metrics-*-*")):
        try:
            owner = int(os.path.basename(candidate).split("-")[2])
            if os.stat(candidate).st_uid != os.getuid() or _alive(owner):
                continue
        except (ValueError, IndexError, OSError):
            continue
        shutil.rmtree(candidate, ignore_errors=True)


def _use_named_files() -> None:
    prom_values = _prometheus().values
    prom_values.ValueClass = prom_values.MultiProcessValue(process_identifier)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _DbFile:
    path: str
    prefix: str
    """``counter``, ``histogram``, ``summary`` or ``gauge_<mode>``."""
    owner: str
    """The process identifier, or ``archive``."""

    @property
    def pid(self) -> int | None:
        head = self.owner.split("-", 1)[0]
        return int(head) if head.isdigit() else None


def _parse(path: str) -> _DbFile | None:
    name = os.path.basename(path)
    if not name.endswith(".db"):
        return None
    parts = name[:-3].split("_")
    if parts[0] == "gauge" and len(parts) >= 3:
        return _DbFile(path, f"gauge_{parts[1]}", "_".join(parts[2:]))
    if len(parts) >= 2:
        return _DbFile(path, parts[0], "_".join(parts[1:]))
    return None


_SUMMED = {"counter", "histogram", "summary", "gauge_sum"}


class MultiProcessAggregator:
    """Adds up the values every process wrote to one directory, and archives dead processes' files.

    Archiving merges the files of processes that exited into one ``<type>_archive.db`` per metric
    type and removes them, under the same lock as collection, so a scrape never sees a value twice
    or not at all. Live gauges (``taskbridge_jobs_in_progress``) of dead processes are dropped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self.archived = 0
        """Files of exited processes merged and removed so far."""

    def archive_dead(self) -> int:
        """Merge and remove the files of processes that are no longer running; returns how many."""
        with self._lock:
            return self._archive_dead()

    def _archive_dead(self) -> int:
        from prometheus_client.mmap_dict import MmapedDict

        dead: dict[str, list[_DbFile]] = {}
        for path in glob.glob(os.path.join(self.path, "*.db")):
            parsed = _parse(path)
            if parsed is None or parsed.pid is None or _alive(parsed.pid):
                continue
            dead.setdefault(parsed.prefix, []).append(parsed)
        removed = 0
        for prefix, files in dead.items():
            if prefix.startswith("gauge_live") or prefix == "gauge_all":
                for f in files:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(f.path)
                removed += len(files)
                continue
            archive = os.path.join(self.path, f"{prefix}_archive.db")
            merged: dict[str, tuple[float, float]] = {}
            for source in ([archive] if os.path.exists(archive) else []) + [f.path for f in files]:
                for key, value, timestamp, _pos in MmapedDict.read_all_values_from_file(source):
                    merged[key] = _combine(prefix, merged.get(key), (value, timestamp))
            staging = archive + ".new"
            out = MmapedDict(staging)
            try:
                for key, (value, timestamp) in merged.items():
                    out.write_value(key, value, timestamp)
            finally:
                out.close()
            os.replace(staging, archive)
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f.path)
            removed += len(files)
        self.archived += removed
        return removed

    def collect(self) -> Iterable[Metric]:
        """Every metric, added up over all processes (a prometheus-client collector)."""
        from prometheus_client.multiprocess import MultiProcessCollector

        with self._lock:
            self._archive_dead()
            files = glob.glob(os.path.join(self.path, "*.db"))
            return list(MultiProcessCollector.merge(files, accumulate=True))


def _combine(prefix: str, old: tuple[float, float] | None, new: tuple[float, float]) -> tuple[float, float]:
    if old is None:
        return new
    if prefix in _SUMMED:
        return old[0] + new[0], max(old[1], new[1])
    if prefix in ("gauge_max", "gauge_livemax"):
        return max(old, new)
    if prefix in ("gauge_min", "gauge_livemin"):
        return min(old, new)
    return new if new[1] >= old[1] else old  # mostrecent


# --- queue depths ------------------------------------------------------------------------------


class QueueDepthCollector:
    """``taskbridge_queue_depth`` and ``taskbridge_dead_letter_depth`` per queue, read from the
    engine at scrape time (or reused for ``max_age`` seconds, when several scrapers share a
    worker); a queue whose depth cannot be read is left out of that scrape and logged."""

    def __init__(
        self,
        queues: Sequence[str],
        depth: Callable[[str], int],
        dead_letter_queue: Callable[[str], str],
        max_age: float = 0.0,
        *,
        done: Callable[[], None] | None = None,
    ) -> None:
        self.queues = list(queues)
        self.depth = depth
        self.dead_letter_queue = dead_letter_queue
        self.max_age = max_age
        self.done = done
        """Called after each read of all the queues (e.g. to close a client)."""
        self._lock = threading.Lock()
        self._cached: tuple[float, list[tuple[str, int | None, int | None]]] | None = None

    def _read(self, queue: str) -> int | None:
        try:
            return int(self.depth(queue))
        except Exception as exc:
            log.warning("metrics: cannot read the depth of queue %r: %s", queue, exc)
            return None

    def read(self) -> list[tuple[str, int | None, int | None]]:
        """``(queue, depth, dead letters)`` for each queue; None where it could not be read."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.max_age:
                try:
                    rows = [(q, self._read(q), self._read(self.dead_letter_queue(q))) for q in self.queues]
                finally:
                    if self.done is not None:
                        with contextlib.suppress(Exception):
                            self.done()
                self._cached = (now, rows)
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        """The two gauges (a prometheus-client collector)."""
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("taskbridge_queue_depth", "Messages waiting in the queue", labels=["queue"])
        dead = GaugeMetricFamily(
            "taskbridge_dead_letter_depth", "Messages in the queue's dead-letter queue", labels=["queue"]
        )
        for queue, waiting, dead_letters in self.read():
            if waiting is not None:
                depth.add_metric([queue], waiting)
            if dead_letters is not None:
                dead.add_metric([queue], dead_letters)
        yield depth
        yield dead


# --- the server --------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`stop` shuts it down."""

    port: int
    registry: CollectorRegistry
    aggregator: MultiProcessAggregator | None = None
    directory: Path | None = None
    owns_directory: bool = False
    _server: Any = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """Stop serving; remove the multiprocess directory if this server created it."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        _forget_aggregator(self.aggregator)
        if self.owns_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def serve(
    port: int,
    addr: str = "0.0.0.0",
    *,
    registry: CollectorRegistry | None = None,
    directory: str | Path | None = None,
    owns_directory: bool = False,
    depth: QueueDepthCollector | None = None,
    archive_every: float = 30.0,
) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` in a background thread.

    With ``directory`` (multiprocess mode), the values of every process writing there are added
    up and dead processes' files archived on each scrape and every ``archive_every`` seconds;
    otherwise ``registry`` (default: the global one) is served. ``depth`` adds the queue gauges.
    """
    prom = _prometheus()
    aggregator = None
    global _aggregator
    if directory is not None:
        served = prom.CollectorRegistry(auto_describe=False)
        aggregator = _aggregator = MultiProcessAggregator(directory)
        served.register(aggregator)
    elif registry is not None:
        served = registry
    else:
        served = prom.CollectorRegistry(auto_describe=False)
        served.register(_Delegate(prom.REGISTRY))
    if depth is not None:
        served.register(depth)
    try:
        httpd, thread = prom.start_http_server(port, addr, registry=served)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {addr}:{port} (TASKBRIDGE_METRICS_PORT / --metrics-port): {exc}"
        ) from None
    server = MetricsServer(
        port=httpd.server_port,
        registry=served,
        aggregator=aggregator,
        directory=Path(directory) if directory is not None else None,
        owns_directory=owns_directory,
        _server=httpd,
    )
    server._threads.append(thread)
    if aggregator is not None and archive_every > 0:
        sweeper = threading.Thread(
            target=_sweep,
            args=(aggregator, server._stopping, archive_every),
            name="taskbridge-metrics-archive",
            daemon=True,
        )
        sweeper.start()
        server._threads.append(sweeper)
    log.info("metrics: serving /metrics on %s:%d", addr, server.port)
    return server


class _Delegate:
    """Collects another registry, so queue gauges can be added without touching it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def _sweep(aggregator: MultiProcessAggregator, stopping: threading.Event, every: float) -> None:
    while not stopping.wait(every):
        try:
            aggregator.archive_dead()
        except Exception:
            log.exception("metrics: archiving the files of exited processes failed")


def process_exited(pid: int) -> None:
    """Tell the worker's metrics server that worker process ``pid`` exited, so its files are archived
    at once. Optional (exited processes are also found on each scrape and every 30 seconds) and
    safe to call whether or not metrics are served."""
    aggregator = _aggregator
    if aggregator is not None:
        try:
            aggregator.archive_dead()
        except Exception:
            log.exception("metrics: archiving the files of process %d failed", pid)


_aggregator: MultiProcessAggregator | None = None


def _forget_aggregator(aggregator: MultiProcessAggregator | None) -> None:
    global _aggregator
    if aggregator is not None and _aggregator is aggregator:
        _aggregator = None
