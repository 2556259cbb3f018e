"""``taskbridge demo``: example jobs that use every option, run on the embedded engine."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import configure, events
from .backoff import Backoff
from .job import job
from .outcomes import Reason

if TYPE_CHECKING:
    from .memory import MemoryEngine

_attempts: Counter[str] = Counter()


@job(name="demo.welcome", queue="demo")
def welcome(name: str) -> None:
    """Plain job: runs once."""
    time.sleep(random.uniform(0.01, 0.05))


@job(
    name="demo.fetch_feed",
    queue="demo",
    retry=Backoff(max_retries=4, base="200ms", cap="2s", jitter=True, on=(OSError,)),
)
def fetch_feed(url: str) -> None:
    """Fails twice with a network error, then succeeds: retried with jittered exponential backoff."""
    _attempts[url] += 1
    if _attempts[url] <= 2:
        raise ConnectionError(f"{url}: connection reset")


@job(name="demo.build_report", queue="demo", timeout="300ms", retry=Backoff(max_retries=1, base="100ms", jitter=False))
def build_report(pages: int) -> None:
    """Takes longer than its timeout: sees JobTimeout, is retried once, then dead-lettered."""
    for _ in range(pages):
        time.sleep(0.05)


@job(name="demo.clean_cache", queue="demo", expires="200ms")
def clean_cache() -> None:
    """Waits too long in the queue and expires before a worker gets it."""


@job(name="demo.send_sms", queue="demo", rate_limit="20/s")
def send_sms(number: int) -> None:
    """Globally limited to 20 a second: a burst is spread out."""


@job(name="demo.sync_account", queue="demo", lock="account:{user_id}")
def sync_account(user_id: int) -> None:
    """One sync per account at a time: the others are deferred until the lock is free."""
    time.sleep(0.3)


@job(name="demo.refresh_search", queue="demo", lock="search:{index}", on_lock="skip")
def refresh_search(index: str) -> None:
    """A refresh while one is running is pointless: skipped instead of deferred."""
    time.sleep(0.4)


@job(name="demo.import_row", queue="demo", retry=Backoff(max_retries=3, on=(OSError,)))
def import_row(row: int) -> None:
    """Row 13 is malformed: a ValueError is not retriable, so it goes to the dead letters."""
    if row == 13:
        raise ValueError(f"row {row}: bad date")


@job(name="demo.reminder", queue="demo", unique="reminder:{user_id}")
def reminder(user_id: int) -> None:
    """Unique per user: a second enqueue while one is pending is refused."""


OUTCOMES = [
    "done",
    "retried",
    "timed out",
    "expired",
    "deferred (rate)",
    "deferred (lock)",
    "deferred (delay)",
    "skipped",
    "dead",
]


def _column(event: events.Event) -> str | None:
    if isinstance(event, events.DeferredEvent):
        columns: dict[str, str] = {Reason.RATE_LIMIT: "deferred (rate)", Reason.LOCK_BUSY: "deferred (lock)"}
        return columns.get(event.reason, "deferred (delay)")
    if isinstance(event, events.RetriedEvent):
        return "retried"
    return event.kind if event.kind in ("done", "expired", "skipped", "dead") else None


def summary(counts: Counter[str]) -> str:
    """What happened to one job, e.g. ``"30 done, 6 deferred (rate)"``."""
    return ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES if counts[outcome])


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the runner's per-job log lines off the progress bar, unless DEBUG logging was asked for."""
    logger = logging.getLogger("taskbridge")
    previous = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def run_demo(console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0 when every job ended as designed)."""
    console = console or Console()
    # inline_wait_max is below send_sms's 50 ms slot interval, so most of its burst is deferred.
    settings = configure(
        engine="memory", broker_url="memory://?autostart=0", inline_wait_max=0.05, lock_retry=0.2, worker_concurrency=4
    )
    from .engine import get_engine
    from .memory import MemoryEngine

    engine = get_engine()
    assert isinstance(engine, MemoryEngine)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    delays: dict[str, list[float]] = defaultdict(list)
    finished = threading.Semaphore(0)
    terminal = {"done", "expired", "skipped", "dead"}

    def on_event(event: events.Event) -> None:
        if not isinstance(event, events.MessageEvent):
            return
        name = event.job or "?"
        column = _column(event)
        if column:
            counts[name][column] += 1
        if isinstance(event, events.RetriedEvent):
            delays[name].append(event.delay)
        if isinstance(event, events.RetriedEvent | events.DeadEvent) and event.timed_out:
            counts[name]["timed out"] += 1
        if event.kind in terminal:
            finished.release()

    events.subscribe(on_event)
    try:
        with _quiet_logs():
            refused = _run_jobs(engine, settings.worker_concurrency, finished, console)
    finally:
        events.unsubscribe(on_event)

    table = Table(title="What happened to each job")
    table.add_column("job")
    table.add_column("what happened")
    table.add_column("backoff delays")
    for name in sorted(counts):
        table.add_row(name.removeprefix("demo."), summary(counts[name]), ", ".join(f"{d:.2f}s" for d in delays[name]))
    console.print(table)
    console.print(f"reminder: {refused} duplicate enqueue refused by unique=")
    dead = engine.depth("demo" + settings.dead_letter_suffix)
    console.print(f"dead-letter queue demo{settings.dead_letter_suffix}: {dead} messages")
    expected = {
        "demo.welcome": ("done", 4),
        "demo.fetch_feed": ("done", 1),
        "demo.build_report": ("dead", 1),
        "demo.clean_cache": ("expired", 1),
        "demo.send_sms": ("done", 30),
        "demo.sync_account": ("done", 3),
        "demo.import_row": ("dead", 1),
        "demo.reminder": ("done", 1),
    }
    problems = [f"{n}: expected {k}={v}, got {counts[n][k]}" for n, (k, v) in expected.items() if counts[n][k] != v]
    at_least = [
        ("demo.refresh_search", "skipped"),
        ("demo.send_sms", "deferred (rate)"),
        ("demo.sync_account", "deferred (lock)"),
        ("demo.fetch_feed", "retried"),
        ("demo.build_report", "timed out"),
    ]
    problems += [f"{n}: expected at least one {k}" for n, k in at_least if counts[n][k] < 1]
    if refused != 1 or dead != 2:
        problems.append(f"expected 1 refused duplicate and 2 dead letters, got {refused} and {dead}")
    for problem in problems:
        console.print(f"[red]unexpected: {problem}")
    return 1 if problems else 0


def _run_jobs(engine: MemoryEngine, concurrency: int, finished: threading.Semaphore, console: Console) -> int:
    """Enqueue the example jobs, run them with a progress bar; returns how many enqueues unique= refused."""
    clean_cache.enqueue()
    time.sleep(0.3)
    total = 1
    welcome.enqueue_many({"name": n} for n in ("Ada", "Grace", "Linus"))
    fetch_feed.enqueue("https://example.org/feed")
    build_report.enqueue(pages=40)
    total += 3 + 1 + 1
    total += send_sms.enqueue_many((n,) for n in range(30))
    total += sync_account.enqueue_many([(7,), (7,), (7,)])
    refresh_search.enqueue("products")
    total += 1
    total += import_row.enqueue_many((r,) for r in range(10, 16))
    refused = 0
    for _ in range(2):
        if reminder.enqueue(user_id=42) is None:
            refused += 1
        else:
            total += 1
    welcome.options(countdown="1s").enqueue("later")
    total += 1
    engine.start(["demo"], concurrency)
    time.sleep(0.1)
    refresh_search.enqueue("products")
    total += 1
    try:
        with Progress(
            TextColumn("[bold]running demo jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("jobs", total=total)
            deadline = time.monotonic() + 60
            done = 0
            while done < total and time.monotonic() < deadline:
                if finished.acquire(timeout=0.1):
                    done += 1
                    progress.update(task, completed=done)
    finally:
        engine.stop()
    return refused
