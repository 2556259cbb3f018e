"""Running the real ``taskbridge`` command as a user does, with chosen settings, and a broker
stand-in that accepts connections but never answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

COMMAND = shutil.which("taskbridge", path=str(Path(sys.executable).parent)) or shutil.which("taskbridge")


@dataclass
class Run:
    """What one command did."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def taskbridge(*args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60) -> Run:
    """``taskbridge ARGS`` in ``cwd`` with only the TASKBRIDGE_* settings in ``env``, 80 columns wide."""
    assert COMMAND, "the taskbridge command is not installed: pip install -e ."
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    clean.update(COLUMNS="80", LINES="40", NO_COLOR="1", TERM="dumb", PYTHONPATH=str(cwd))
    started = time.monotonic()
    done = subprocess.run(
        [COMMAND, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port where TCP connections are accepted by the kernel and then nothing is ever said."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


JOBS_MODULE = """
from taskbridge import job

@job(queue="emails")
def send_report(user_id: int) -> None:
    print("report", user_id)

@job()
def cleanup() -> None:
    pass
"""


def one_job(queue: str) -> str:
    """A job module declaring one job ``f`` on ``queue``."""
    return f'from taskbridge import job\n\n@job(queue="{queue}")\ndef f() -> None:\n    pass\n'


def write_jobs(directory: Path, name: str = "appjobs", text: str = JOBS_MODULE) -> str:
    """Write a job module into ``directory`` and return its name."""
    (directory / f"{name}.py").write_text(text, encoding="utf-8")
    return name
