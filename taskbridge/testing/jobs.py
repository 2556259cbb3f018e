"""The jobs the contract suite runs. Each records what happened to a JSON-lines events file.

Workers import this module (``taskbridge worker taskbridge.testing.jobs``); the file named by
``TASKBRIDGE_CONTRACT_EVENTS`` receives one line per job event and per runner outcome, from every
process, so a test can check what users would check: what ran, when, how often, in which process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from taskbridge import Backoff, JobTimeout, events, every, job

EVENTS_ENV = "TASKBRIDGE_CONTRACT_EVENTS"
_write_lock = threading.Lock()


def record(kind: str, **fields: Any) -> None:
    """Append one event line (atomic for short lines opened with O_APPEND)."""
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    line = json.dumps({"event": kind, "time": time.time(), "pid": os.getpid(), **fields}) + "\n"
    with _write_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    if (getattr(event, "job", None) or "").startswith(__name__):
        fields = {k: v for k, v in event.as_dict().items() if k not in ("event", "time", "pid")}
        record("outcome:" + event.kind, **fields)


@job(name=f"{__name__}.echo")
def echo(*args: Any, **kwargs: Any) -> None:
    """Records the arguments it received."""
    record("ran", job="echo", args=list(args), kwargs=kwargs)


@job(name=f"{__name__}.two_args")
def two_args(a: int, b: int) -> None:
    """Needs exactly a and b; used for wrong-argument and unknown-kwarg cases."""
    record("ran", job="two_args", a=a, b=b)


@job(name=f"{__name__}.strict", drop_unknown_kwargs=False)
def strict(a: int) -> None:
    """Opted out of dropping unknown keyword arguments."""
    record("ran", job="strict", a=a)


@job(name=f"{__name__}.sleepy", timeout=1.0, retry=Backoff(max_retries=1, base=0.5, jitter=False))
def sleepy(seconds: float) -> None:
    """Sleeps in small steps; records whether it saw JobTimeout."""
    record("started", job="sleepy")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
    except JobTimeout:
        record("saw_timeout", job="sleepy")
        raise
    record("ran", job="sleepy")


@job(name=f"{__name__}.flaky", retry=Backoff(max_retries=3, base=1.0, cap=60, jitter=False, on=(OSError,)))
def flaky(token: str) -> None:
    """Always fails with an OSError, which its policy retries 3 times."""
    record("attempt", job="flaky", token=token)
    raise OSError(f"flaky {token} failed on purpose")


@job(name=f"{__name__}.fatal", retry=Backoff(max_retries=3, base=1.0, on=(OSError,)))
def fatal(token: str) -> None:
    """Fails with an error its policy does not retry."""
    record("attempt", job="fatal", token=token)
    raise ValueError("not retriable")


@job(name=f"{__name__}.locked", lock="contract:{key}", timeout=30)
def locked(key: str, hold: float, n: int) -> None:
    """Holds its lock for ``hold`` seconds; records when it started and ended."""
    start = time.time()
    time.sleep(hold)
    record("ran", job="locked", key=key, n=n, start=start, end=time.time())


@job(name=f"{__name__}.skipping", lock="contract-skip:{key}", on_lock="skip", timeout=30)
def skipping(key: str, hold: float, n: int) -> None:
    """Like ``locked`` but skipped, not deferred, while its lock is held."""
    record("started", job="skipping", n=n)
    time.sleep(hold)
    record("ran", job="skipping", key=key, n=n)


@job(name=f"{__name__}.limited", rate_limit="10/s")
def limited(n: int) -> None:
    """Globally limited to 10 runs a second."""
    record("ran", job="limited", n=n)


@job(name=f"{__name__}.crashy", timeout=120)
def crashy(token: str, marker: str) -> None:
    """On its first run waits to be killed with its worker; on the next run it completes."""
    marker_path = Path(marker)
    if not marker_path.exists():
        marker_path.write_text(str(os.getpid()))
        record("started", job="crashy", token=token)
        time.sleep(110)
    record("ran", job="crashy", token=token)


# -- job handles: tracked jobs keep their status and result ----------------------------------


@job(name=f"{__name__}.tracked", result_ttl=120)
def tracked(value: Any, hold_until: str | None = None) -> dict[str, Any]:
    """Returns ``value`` and its process id; with ``hold_until``, first waits (at most 60 s) for
    that file to exist, so a test can see it running."""
    if hold_until:
        deadline = time.monotonic() + 60
        while not Path(hold_until).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    record("ran", job="tracked", value=value)
    return {"value": value, "pid": os.getpid()}


@job(name=f"{__name__}.tracked_failing", result_ttl=120, retry=Backoff(max_retries=1, base=2.0, jitter=False))
def tracked_failing(token: str) -> None:
    """Always fails; its policy retries once, two seconds later."""
    record("attempt", job="tracked_failing", token=token)
    raise OSError(f"tracked_failing {token} failed on purpose")


# -- workflows: chains that pass results, groups with a callback ----------------------------


@job(name=f"{__name__}.extract")
def extract(account: int) -> dict[str, Any]:
    """A chain's first step: returns rows for the next step."""
    record("ran", job="extract", account=account)
    return {"account": account, "rows": [1, 2, 3]}


@job(name=f"{__name__}.transform")
def transform(data: dict[str, Any], factor: int = 1) -> int:
    """Receives extract's result; returns a number."""
    record("ran", job="transform", data=data, factor=factor)
    return sum(data["rows"]) * factor


@job(name=f"{__name__}.load")
def load(total: Any, tag: str = "") -> None:
    """A chain's last step: records what it received."""
    record("ran", job="load", total=total, tag=tag)


@job(name=f"{__name__}.fails_first")
def fails_first(value: Any, marker: str) -> Any:
    """Fails (not retried) until ``marker`` exists; then passes ``value`` on."""
    record("attempt", job="fails_first", value=value)
    if not Path(marker).exists():
        raise ValueError(f"{marker} is missing")
    return value


@job(name=f"{__name__}.opaque")
def opaque() -> Any:
    """Returns a value that is not JSON."""
    record("ran", job="opaque")
    return {1, 2}


@job(name=f"{__name__}.part")
def part(i: int) -> int:
    """A group member; members whose number is a multiple of 5 fail for good."""
    record("ran", job="part", i=i)
    if i % 5 == 0:
        raise ValueError(f"part {i} fails on purpose")
    return i


@job(name=f"{__name__}.tally")
def tally(counts: dict[str, int], label: str) -> None:
    """A group's callback: records the counts it received."""
    record("ran", job="tally", counts=counts, label=label)


@job(name=f"{__name__}.visit")
def visit(item: Any) -> None:
    """A fan-out's idempotent job: records the item it was given."""
    record("ran", job="visit", item=item)


@job(name=f"{__name__}.tick", schedule=every("1s"))
def tick(scheduled_at: str) -> None:
    """A periodic job (every second, once ``taskbridge scheduler`` runs): records its scheduled time."""
    record("ran", job="tick", scheduled_at=scheduled_at)
