"""Jobs the Celery adapter's end-to-end tests run in real worker processes; each records to a file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from taskbridge import Backoff, events, job

RECORD_ENV = "TB_CELERY_TEST_RECORD"


def record(kind: str, **fields: Any) -> None:
    """Append one JSON line to the file named by TB_CELERY_TEST_RECORD (O_APPEND: safe across processes)."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps({"event": kind, "time": time.time(), "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@events.subscribe
def _record_outcome(event: events.Event) -> None:
    name = str(event.get("job") or "")
    if name.startswith("cq."):
        fields = {k: v for k, v in event.items() if k not in ("event", "time", "pid", "job")}
        record("outcome:" + event["event"], job=name.removeprefix("cq."), **fields)


@job(name="cq.echo")
def echo(n: int, payload: Any = None) -> None:
    """Records that it ran with ``n``."""
    record("ran", job="echo", n=n, payload=payload)


@job(name="cq.stuck", timeout=None, hard_timeout=1.5, retry=Backoff(max_retries=1, base=0.2, jitter=False))
def stuck(token: str) -> None:
    """Never returns on its own: only the hard timeout (Celery's time_limit) ends it."""
    record("started", job="stuck", token=token)
    while True:
        time.sleep(0.05)


@job(name="cq.crashy", timeout=120)
def crashy(marker: str) -> None:
    """First run: writes ``marker`` and waits to be killed with its worker; later runs complete."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        record("started", job="crashy")
        time.sleep(100)
    record("ran", job="crashy")
