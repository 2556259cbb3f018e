"""A producer script on the embedded engine that enqueues and exits: what is due runs before the
process ends (bounded by exit_drain_timeout), and a warning lists what could not run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys, time
from taskbridge import job

@job()
def slow(n: int, seconds: float = 0.2) -> None:
    time.sleep(seconds)
    with open(sys.argv[1], "a") as out:
        out.write(str(n) + "\\n")

for i in range({count}):
    slow.enqueue(n=i, seconds={seconds})
slow.options(countdown=3600).enqueue(n=99)
"""


def run_producer(tmp_path: Path, count: int, seconds: float, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "producer.py"
    script.write_text(SCRIPT.format(count=count, seconds=seconds), encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ran.txt")],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ran(tmp_path: Path) -> list[int]:
    path = tmp_path / "ran.txt"
    return sorted(int(line) for line in path.read_text().split()) if path.exists() else []


def test_jobs_due_at_exit_run_and_a_countdown_job_is_reported(tmp_path: Path) -> None:
    done = run_producer(tmp_path, count=6, seconds=0.2)
    assert done.returncode == 0, done.stderr
    assert ran(tmp_path) == [0, 1, 2, 3, 4, 5]
    assert "embedded engine: 1 job(s) not run before the process exited" in done.stderr
    assert "1 x __main__.slow (countdown: due in 3600s)" in done.stderr
    assert "get_engine().join()" in done.stderr


def test_exit_drain_timeout_bounds_the_wait(tmp_path: Path) -> None:
    done = run_producer(tmp_path, count=4, seconds=30, TASKBRIDGE_EXIT_DRAIN_TIMEOUT="0.5s")
    assert done.returncode == 0, done.stderr
    assert ran(tmp_path) == [], "the process exited before any 30-second job could finish"
    assert "still running after exit_drain_timeout=0.5s" in done.stderr
    assert "(not started in time)" in done.stderr
