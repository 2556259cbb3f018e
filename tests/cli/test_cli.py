"""The real ``taskbridge`` command, run as a user runs it: exit codes and what it prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMAND = shutil.which("taskbridge", path=str(Path(sys.executable).parent)) or shutil.which("taskbridge")


def taskbridge(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``taskbridge ARGS`` in ``cwd`` with no TASKBRIDGE_* settings, 80 columns wide."""
    assert COMMAND, "the taskbridge command is not installed: pip install -e ."
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    env.update(COLUMNS="80", LINES="40", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = taskbridge("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("worker", "enqueue", "contract", "demo"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), result.stdout
    assert taskbridge("enqueue", "--help", cwd=tmp_path).returncode == 0


def test_demo_exits_0_and_prints_a_readable_table(tmp_path: Path) -> None:
    result = taskbridge("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "What happened to each job" in out
    rows = {
        "welcome": r"4 done",
        "fetch_feed": r"1 done, 2 retried\s.*\d\.\d\ds, \d\.\d\ds",
        "build_report": r"1 retried, 2 timed out, 1 dead\s.*0\.10s",
        "clean_cache": r"1 expired",
        "send_sms": r"30 done, \d+ deferred \(rate\)",
        "sync_account": r"3 done, \d+ deferred \(lock\)",
        "refresh_search": r"\d+ done, \d+ skipped",
        "import_row": r"5 done, 1 dead",
        "reminder": r"1 done",
    }
    for name, what in rows.items():
        assert re.search(rf"^.*\b{name}\b.*{what}", out, re.MULTILINE), f"row {name!r} not as expected:\n{out}"
    assert "1 duplicate enqueue refused by unique=" in out
    assert "dead-letter queue demo-dead: 2 messages" in out
    assert "unexpected" not in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "…" not in out, "a column was cut off"
    assert not re.search(r"\b(INFO|WARNING)\b", result.stdout + result.stderr), "log lines over the demo output"


def test_contract_on_the_memory_engine(tmp_path: Path) -> None:
    result = taskbridge("contract", "--engine", "memory", "-k", "round_trip or enqueue_many or not_json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "3 passed, 0 failed"
    assert "enqueue_run_and_arguments_round_trip" in result.stdout


def test_contract_with_no_case_selected_fails(tmp_path: Path) -> None:
    result = taskbridge("contract", "--engine", "memory", "-k", "no_such_case", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout.strip().splitlines()[-1] == "0 passed, 0 failed"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{bad", r"Invalid value for ARGUMENTS: not JSON"),
        ("5", r"Invalid value for ARGUMENTS: must be a JSON list or object"),
    ],
)
def test_enqueue_with_bad_json_exits_2(tmp_path: Path, arguments: str, message: str) -> None:
    result = taskbridge("enqueue", "taskbridge.testing.jobs.echo", arguments, cwd=tmp_path)
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_enqueue_with_arguments_the_job_does_not_take_exits_2(tmp_path: Path) -> None:
    result = taskbridge("enqueue", "taskbridge.testing.jobs.two_args", "[1]", cwd=tmp_path)
    assert result.returncode == 2
    assert "job 'taskbridge.testing.jobs.two_args': arguments do not match" in result.stderr


def test_enqueue_of_an_unknown_job_names_it(tmp_path: Path) -> None:
    result = taskbridge("enqueue", "no_such_module_xyz.job", "[]", cwd=tmp_path)
    assert result.returncode == 2
    assert "no_such_module_xyz" in result.stderr and "Traceback" not in result.stderr


def test_enqueue_prints_the_job_id(tmp_path: Path) -> None:
    result = taskbridge("enqueue", "taskbridge.testing.jobs.two_args", '{"a": 1, "b": 2}', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{32}", result.stdout.strip())


def test_worker_for_a_module_that_does_not_exist(tmp_path: Path) -> None:
    result = taskbridge("worker", "no_such_module_xyz", cwd=tmp_path, timeout=30)
    assert result.returncode != 0
    assert "no_such_module_xyz" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_needs_a_module(tmp_path: Path) -> None:
    result = taskbridge("worker", cwd=tmp_path)
    assert result.returncode == 2
    assert "Missing argument 'MODULES...'" in result.stderr
