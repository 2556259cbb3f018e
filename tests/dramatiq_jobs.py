"""Jobs the Dramatiq adapter's end-to-end tests run in real worker processes; each records to a file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from taskbridge import Backoff, job

RECORD_ENV = "TB_DRAMATIQ_TEST_RECORD"
_hoard: list[bytes] = []


def record(kind: str, **fields: Any) -> None:
    """Append one JSON line to the file named by TB_DRAMATIQ_TEST_RECORD."""
    line = json.dumps({"event": kind, "time": time.time(), "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(os.environ[RECORD_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@job(name="dq.echo")
def echo(n: int, payload: Any = None) -> None:
    """Records that it ran with ``n``."""
    record("ran", job="echo", n=n, payload=payload)


@job(name="dq.crashy", timeout=120)
def crashy(marker: str) -> None:
    """First run: writes ``marker`` and waits to be killed; later runs complete."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        record("started", job="crashy")
        time.sleep(100)
    record("ran", job="crashy")


@job(name="dq.stuck", timeout=1, hard_timeout=2, retry=Backoff(max_retries=0))
def stuck(n: int) -> None:
    """Ignores its soft timeout (swallows JobTimeout) and keeps running past its hard timeout."""
    record("started", job="stuck", n=n)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException as exc:
            if type(exc).__name__ != "JobTimeout":
                raise
            record("ignored_timeout", job="stuck", n=n)
    record("ran", job="stuck", n=n)


@job(name="dq.hog")
def hog(n: int, megabytes: int) -> None:
    """Keeps ``megabytes`` of memory alive in its process, then records that it ran."""
    _hoard.append(os.urandom(megabytes * 1024 * 1024))
    time.sleep(0.05)
    record("ran", job="hog", n=n)
