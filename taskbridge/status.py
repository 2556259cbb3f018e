"""``taskbridge status``: queues at a glance — depth, dead letters, throughput, p50/p95 wait.

Depths come from the engine (any process can ask the broker). Throughput and wait come from the
workers' ``/metrics`` endpoints (``--metrics URL``, or the ``metrics_port`` setting on this host):
they are the change of ``taskbridge_jobs_finished_total`` and of the
``taskbridge_job_wait_seconds`` histogram between two scrapes, summed over every endpoint given.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Settings, banner, mask_url
from .engine import Engine, legacy_holdings
from .errors import ConfigurationError
from .layout import dead_letter_queue

RAN_OUTCOMES = ("done", "retried", "dead")
"""Outcomes counted as throughput: the job ran (or was given up)."""
FAILED_OUTCOMES = ("retried", "dead")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Sample:
    """One sample of a scraped metric."""

    name: str
    labels: dict[str, str]
    value: float


def read_metrics(url: str, timeout: float = 5.0) -> list[Sample]:
    """Fetch and parse one Prometheus text endpoint (needs prometheus-client)."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise ConfigurationError(
            "reading /metrics needs prometheus-client: pip install 'taskbridge-jobs[metrics]'"
        ) from None
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


@dataclass
class QueueCounters:
    """What the workers' metrics say about one queue at one moment (summed over jobs and endpoints)."""

    ran: float = 0.0
    failed: float = 0.0
    running: float = 0.0
    wait_buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative count of started jobs by upper bound (``le``) of the wait histogram."""


@dataclass
class Snapshot:
    """Depths and counters of the watched queues at ``time``."""

    time: float
    depths: dict[str, int | None]
    dead_letters: dict[str, int | None]
    counters: dict[str, QueueCounters] | None
    errors: list[str] = field(default_factory=list)
    states: dict[str, dict[str, int]] | None = None
    """Tracked jobs per queue and state, when tracking is on."""
    fan_outs: list[dict[str, Any]] = field(default_factory=list)
    """The progress of each running fan-out (see :func:`taskbridge.workflows.running`)."""
    legacy: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per queue, the queues outside the layout its workers also read (dramatiq-sqs producers'
    ``<namespace>_<queue>``), by their name on the broker, with their depth."""


@dataclass
class QueueStatus:
    """One row of the status table."""

    queue: str
    depth: int | None
    dead_letters: int | None
    throughput: float | None
    """Jobs run per second (done, retried or dead) over the window."""
    failures: float | None
    """Failed runs per second (retried or dead) over the window."""
    wait_p50: float | None
    wait_p95: float | None
    running: float | None
    states: dict[str, int] | None = None
    """Tracked jobs by state (queued, running, done, ...), when tracking is on."""
    legacy: str | None = None
    """For a row of a legacy queue: its name on the broker. ``queue`` is then the queue whose workers
    read it, ``depth`` its depth, and the other columns are empty (they belong to the queue's row)."""


def counters_from(samples: Iterable[Sample], queues: Sequence[str]) -> dict[str, QueueCounters]:
    """Sum the scraped taskbridge samples per queue."""
    found = {q: QueueCounters() for q in queues}
    for s in samples:
        queue = s.labels.get("queue")
        if queue not in found:
            continue
        c = found[queue]
        if s.name == "taskbridge_jobs_finished_total":
            outcome = s.labels.get("outcome")
            if outcome in RAN_OUTCOMES:
                c.ran += s.value
            if outcome in FAILED_OUTCOMES:
                c.failed += s.value
        elif s.name == "taskbridge_jobs_in_progress":
            c.running += s.value
        elif s.name == "taskbridge_job_wait_seconds_bucket":
            le = float(s.labels.get("le", "inf"))
            c.wait_buckets[le] = c.wait_buckets.get(le, 0.0) + s.value
    return found


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated inside its bucket (as PromQL's
    ``histogram_quantile``); None without observations. Above the last finite bound, that bound."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def take_snapshot(engine: Engine, queues: Sequence[str], metrics_urls: Sequence[str], settings: Settings) -> Snapshot:
    """Read depths from the engine and counters from every metrics endpoint."""
    errors: list[str] = []
    depths: dict[str, int | None] = {}
    dead: dict[str, int | None] = {}
    legacy: dict[str, dict[str, int]] = {}
    for queue in queues:
        depths[queue] = _depth(engine, queue, errors)
        dead[queue] = _depth(engine, dead_letter_queue(queue, settings), errors)
        try:
            if found := legacy_holdings(engine, queue):
                legacy[queue] = dict(found)
        except Exception as exc:
            errors.append(f"legacy queue of {queue}: {exc}")
    counters: dict[str, QueueCounters] | None = None
    if metrics_urls:
        samples: list[Sample] = []
        read = 0
        for url in metrics_urls:
            try:
                samples.extend(read_metrics(url))
                read += 1
            except ConfigurationError:
                raise
            except Exception as exc:
                errors.append(f"{mask_url(url)}: {exc}")
        counters = counters_from(samples, queues) if read else None
    from .tracking.counts import state_counts

    states = state_counts(queues, settings, errors)
    return Snapshot(time.time(), depths, dead, counters, errors, states, _fan_outs(errors), legacy)


def _fan_outs(errors: list[str]) -> list[dict[str, Any]]:
    from .workflows import running

    try:
        return running()
    except Exception as exc:
        errors.append(f"running fan-outs: {exc}")
        return []


def _depth(engine: Engine, queue: str, errors: list[str]) -> int | None:
    try:
        return int(engine.depth(queue))
    except Exception as exc:
        errors.append(f"depth of {queue}: {exc}")
        return None


def compare(older: Snapshot | None, newer: Snapshot) -> list[QueueStatus]:
    """Rows for ``newer``; rates and wait percentiles over the time since ``older``."""
    rows = []
    for queue in newer.depths:
        row = QueueStatus(queue, newer.depths[queue], newer.dead_letters[queue], None, None, None, None, None)
        row.states = newer.states.get(queue) if newer.states is not None else None
        now = newer.counters.get(queue) if newer.counters is not None else None
        if now is not None:
            row.running = now.running
        then = older.counters.get(queue) if older is not None and older.counters is not None else None
        if now is not None and then is not None and older is not None and newer.time > older.time:
            elapsed = newer.time - older.time
            row.throughput = _increase(then.ran, now.ran) / elapsed
            row.failures = _increase(then.failed, now.failed) / elapsed
            window = {le: _increase(then.wait_buckets.get(le, 0.0), n) for le, n in now.wait_buckets.items()}
            row.wait_p50 = quantile(0.5, window)
            row.wait_p95 = quantile(0.95, window)
        rows.append(row)
        for name, depth in sorted(newer.legacy.get(queue, {}).items()):
            rows.append(QueueStatus(queue, depth, None, None, None, None, None, None, legacy=name))
    return rows


def _increase(before: float, after: float) -> float:
    return after - before if after >= before else after  # a worker restarted: its counters began again


def as_json(rows: Sequence[QueueStatus], snapshot: Snapshot, window: float | None, settings: Settings) -> str:
    """The ``--json`` document."""
    return json.dumps(
        {
            "time": snapshot.time,
            "engine": settings.engine,
            "broker": mask_url(settings.broker_url),
            "window_seconds": window,
            "queues": [asdict(r) for r in rows],
            "fan_outs": snapshot.fan_outs,
            "errors": snapshot.errors,
        },
        indent=2,
    )


def render(rows: Sequence[QueueStatus], snapshot: Snapshot, window: float | None, settings: Settings) -> Any:
    """A rich table of ``rows``."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = f"taskbridge · {settings.engine} · {mask_url(settings.broker_url)}"
    # At 80 columns every column fits: no vertical rules, and a long queue name folds onto the next
    # line instead of being cut; the numbers and headers keep their width.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("queue", overflow="fold", min_width=10)
    for name in ("depth", "dead\nletters", "jobs/s", "failed/s", "wait\np50", "wait\np95", "running"):
        table.add_column(name, justify="right", no_wrap=True)
    with_states = snapshot.states is not None
    if with_states:
        table.add_column("tracked jobs", overflow="fold")
    for r in rows:
        states = [" ".join(f"{k} {v}" for k, v in sorted((r.states or {}).items()))] if with_states else []
        table.add_row(
            r.queue if r.legacy is None else f"{r.queue} ← {r.legacy} (legacy)",
            _count(r.depth),
            Text(_count(r.dead_letters), style="bold red" if r.dead_letters else ""),
            _rate(r.throughput),
            _rate(r.failures),
            _seconds(r.wait_p50),
            _seconds(r.wait_p95),
            _count(r.running),
            *states,
        )
    tables: list[Any] = [table]
    if snapshot.fan_outs:
        tables.append(_fan_out_table(snapshot.fan_outs))
    notes = [banner(settings)]
    if snapshot.counters is None and not snapshot.errors:
        notes.append("jobs/s and wait need a worker's /metrics: --metrics URL or the metrics_port setting")
    elif window is not None:
        notes.append(f"rates and wait over the last {window:.0f}s")
    notes.extend(snapshot.errors)
    return Group(*tables, *(Text(n, style="dim") for n in notes))


def _fan_out_table(fan_outs: Sequence[dict[str, Any]]) -> Any:
    """Running fan-outs: chunks done of total, jobs published, ETA."""
    from rich import box
    from rich.table import Table

    table = Table(title="running fan-outs", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("fan-out", overflow="fold")
    table.add_column("job", overflow="fold")
    for name in ("chunks", "jobs\npublished", "ETA"):
        table.add_column(name, justify="right", no_wrap=True)
    for f in fan_outs:
        total = "?" if f["total"] is None else f"{f['total']:,}"
        table.add_row(f["id"], f["job"], f"{f['chunks']:,} / {total}", f"{f['items']:,}", _seconds(f["eta"]))
    return table


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def run_status(
    engine: Engine,
    settings: Settings,
    queues: Sequence[str],
    metrics_urls: Sequence[str],
    *,
    once: bool,
    json_output: bool,
    interval: float,
    window: float,
) -> int:
    """Print one snapshot (``once`` or ``json_output``) or a live table until interrupted."""
    from rich.console import Console

    console = Console()
    if once or json_output:
        first = take_snapshot(engine, queues, metrics_urls, settings)
        older: Snapshot | None = None
        latest = first
        if metrics_urls:
            time.sleep(interval)
            older, latest = first, take_snapshot(engine, queues, metrics_urls, settings)
        span = latest.time - older.time if older is not None else None
        rows = compare(older, latest)
        if json_output:
            print(as_json(rows, latest, span, settings))
        else:
            console.print(render(rows, latest, span, settings))
        unread = [q for q in queues if latest.depths.get(q) is None]
        return 1 if unread else 0

    from rich.live import Live

    history: deque[Snapshot] = deque()
    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                snap = take_snapshot(engine, queues, metrics_urls, settings)
                history.append(snap)
                while len(history) > 2 and snap.time - history[0].time > window:
                    history.popleft()
                base = history[0] if len(history) > 1 else None
                span = snap.time - base.time if base is not None else None
                live.update(render(compare(base, snap), snap, span, settings), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
    return 0
