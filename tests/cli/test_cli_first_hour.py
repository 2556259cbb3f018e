"""The first hour with the ``taskbridge`` command: what is in force, typos, versions, log levels,
workers that would idle, and unknown jobs; each as a user sees it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_run import taskbridge, write_jobs

import taskbridge as taskbridge_package


def test_version(tmp_path: Path) -> None:
    result = taskbridge("--version", cwd=tmp_path)
    assert result.code == 0
    assert result.stdout.strip() == f"taskbridge {taskbridge_package.__version__}"


def test_config_shows_what_is_in_force_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "taskbridge.toml").write_text(
        'engine = "celery"\nbroker_url = "amqp://app:s3cretpw@127.0.0.1:5672//"\n', encoding="utf-8"
    )
    (tmp_path / "src" / "app").mkdir(parents=True)
    result = taskbridge(
        "config", cwd=tmp_path / "src" / "app", env={"TASKBRIDGE_COORDINATION_URL": "redis://127.0.0.1:6379/1"}
    )
    assert result.code == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        "engine=celery broker=amqp://app:***@127.0.0.1:5672// coordination=redis://127.0.0.1:6379/1"
    )
    assert f"config={tmp_path / 'taskbridge.toml'}" in first
    assert "s3cretpw" not in result.stdout + result.stderr
    assert re.search(rf"^engine\s+celery\s+\[{re.escape(str(tmp_path / 'taskbridge.toml'))}\]$", result.stdout, re.M)
    assert re.search(
        r"^coordination_url\s+redis://127.0.0.1:6379/1\s+\[env TASKBRIDGE_COORDINATION_URL\]$", result.stdout, re.M
    )
    assert re.search(r"^namespace\s+taskbridge\s+\[default\]$", result.stdout, re.M)


def test_a_misspelt_variable_is_reported_with_the_closest_setting(tmp_path: Path) -> None:
    result = taskbridge("config", cwd=tmp_path, env={"TASKBRIDGE_ENGNE": "celery"})
    assert result.code == 0
    assert "unknown environment variable TASKBRIDGE_ENGNE; did you mean TASKBRIDGE_ENGINE?" in result.stderr
    assert "engine=memory" in result.stdout


def test_strict_turns_a_misspelt_variable_into_an_error(tmp_path: Path) -> None:
    result = taskbridge("config", cwd=tmp_path, env={"TASKBRIDGE_ENGNE": "celery", "TASKBRIDGE_STRICT": "1"})
    assert result.code == 2
    assert result.error_lines == [
        "error: unknown taskbridge settings (strict is on):",
        "  unknown environment variable TASKBRIDGE_ENGNE; did you mean TASKBRIDGE_ENGINE?",
    ]


def test_log_level_is_accepted_after_the_command(tmp_path: Path) -> None:
    before = taskbridge("--log-level", "DEBUG", "config", cwd=tmp_path)
    after = taskbridge("config", "--log-level", "debug", cwd=tmp_path)
    assert before.code == after.code == 0, before.stderr + after.stderr
    module = write_jobs(tmp_path)
    worker = taskbridge("worker", module, "--queues", "nope", "--log-level", "DEBUG", cwd=tmp_path)
    assert "No such option" not in worker.stderr
    assert "uses queue(s) nope" in worker.stderr


def test_a_bad_log_level_is_one_clean_error(tmp_path: Path) -> None:
    for args in (("--log-level", "LOUD", "config"), ("config", "--log-level", "LOUD")):
        result = taskbridge(*args, cwd=tmp_path)
        assert result.code == 2
        assert "Invalid value for '--log-level': 'LOUD' is not one of" in result.stderr
        assert "Traceback" not in result.stderr


def test_worker_refuses_a_module_without_jobs(tmp_path: Path) -> None:
    module = write_jobs(tmp_path, "helpers", "def helper() -> int:\n    return 1\n")
    result = taskbridge("worker", module, cwd=tmp_path, timeout=30)
    assert result.code == 2
    assert result.error_lines == [
        "error: no @job in helpers: a worker needs the module(s) that declare the jobs it runs"
    ]


def test_worker_refuses_queues_that_no_job_uses(tmp_path: Path) -> None:
    module = write_jobs(tmp_path)
    result = taskbridge("worker", module, "--queues", "email,urgent", cwd=tmp_path, timeout=30)
    assert result.code == 2
    assert result.error_lines == [
        "error: no job of appjobs uses queue(s) email, urgent (--queues); their queues are: default, emails "
        "(--any-queue if you route jobs there with .options(queue=...))"
    ]


def test_worker_with_any_queue_consumes_a_queue_jobs_are_routed_to(tmp_path: Path) -> None:
    module = write_jobs(tmp_path)
    (tmp_path / "ran.txt").touch()
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskbridge", "worker", module, "--queues", "urgent", "--any-queue"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        line = worker.stderr.readline()
        assert "taskbridge worker:" in line and "queues=urgent" in line, line
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(10)


def test_enqueue_of_an_unknown_job_lists_the_jobs_of_its_module(tmp_path: Path) -> None:
    module = write_jobs(tmp_path)
    result = taskbridge("enqueue", f"{module}.nope", cwd=tmp_path)
    assert result.code == 2
    assert "no job named 'appjobs.nope'; appjobs declares: appjobs.cleanup, appjobs.send_report" in result.stderr


def test_contract_shows_each_case_as_it_ends(tmp_path: Path) -> None:
    result = taskbridge("contract", "--engine", "memory", "-k", "round_trip or not_json", cwd=tmp_path)
    assert result.code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"passed\s+enqueue_run_and_arguments_round_trip memory \d+\.\ds", lines[0]), lines[0]
    assert re.fullmatch(r"passed\s+enqueue_rejects_arguments_that_are_not_json memory \d+\.\ds", lines[1]), lines[1]
    assert "enqueue_run_and_arguments_round_trip[memory]" in result.stdout, "the table names the combination"


def test_contract_without_pytest_names_the_extra(tmp_path: Path) -> None:
    code = "import sys; sys.modules['pytest'] = None; from taskbridge.cli import main; main(['contract'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: taskbridge contract needs pytest: pip install 'taskbridge-jobs[contract]'"
