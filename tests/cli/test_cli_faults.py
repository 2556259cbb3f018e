"""A server that is down, silent or refusing, and a bad setting: the command prints one line (what,
where with the password masked, the cause, what to check) and exits non-zero, in bounded time."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from cli_run import COMMAND, one_job, silent_server, taskbridge, write_jobs

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"
CLOSED = "127.0.0.1:1"
SQS_ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")


@pytest.fixture
def jobs(tmp_path: Path, redis_url: str) -> str:
    """A job module in the working directory; the shared Redis must be up (fails in CI otherwise)."""
    return write_jobs(tmp_path)


def settings(engine: str, broker: str, **more: str) -> dict[str, str]:
    return {"TASKBRIDGE_ENGINE": engine, "TASKBRIDGE_BROKER_URL": broker, **more}


@pytest.mark.parametrize(
    ("engine", "broker", "shown"),
    [
        ("celery", f"redis://:s3cretpw@{CLOSED}/0", f"redis://:***@{CLOSED}/0"),
        ("dramatiq", f"amqp://guest:s3cretpw@{CLOSED}//", f"amqp://guest:***@{CLOSED}//"),
    ],
)
def test_enqueue_to_an_unreachable_broker_is_one_line(
    tmp_path: Path, jobs: str, engine: str, broker: str, shown: str
) -> None:
    result = taskbridge("enqueue", f"{jobs}.send_report", "[1]", cwd=tmp_path, env=settings(engine, broker))
    assert result.code == 2
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith(f"error: cannot use the broker at {shown}: ")
    assert "Connection refused" in line and "check TASKBRIDGE_BROKER_URL and that the server is running" in line
    assert "s3cretpw" not in result.stderr
    assert result.seconds < 10


def test_a_wrong_amqp_password_is_one_line(tmp_path: Path, jobs: str) -> None:
    broker = "amqp://guest:not-the-password@127.0.0.1:5672//"
    for args in (("enqueue", f"{jobs}.send_report", "[1]"), ("status", jobs, "--once"), ("worker", jobs)):
        result = taskbridge(*args, cwd=tmp_path, env=settings("celery", broker), timeout=30)
        assert result.code == 2, f"{args}: {result.stderr}"
        assert len(result.error_lines) == 1, result.stderr
        assert "cannot use the broker at amqp://guest:***@127.0.0.1:5672//: login refused" in result.stderr
        assert "check the user and password in TASKBRIDGE_BROKER_URL" in result.stderr
        assert "not-the-password" not in result.stderr


@pytest.mark.parametrize("engine", ["celery", "dramatiq"])
def test_each_engine_checks_its_broker_with_the_same_wording(tmp_path: Path, jobs: str, engine: str) -> None:
    refused = taskbridge(
        "enqueue",
        f"{jobs}.send_report",
        "[1]",
        cwd=tmp_path,
        timeout=30,
        env=settings(engine, "amqp://guest:not-the-password@127.0.0.1:5672//"),
    )
    assert refused.code == 2 and len(refused.error_lines) == 1, refused.stderr
    assert refused.error_lines[0].startswith("error: cannot use the broker at amqp://guest:***@127.0.0.1:5672//: ")
    assert (
        "login refused" in refused.stderr and "check the user and password in TASKBRIDGE_BROKER_URL" in refused.stderr
    )
    env = settings(engine, "sqs://", TASKBRIDGE_SQS_ENDPOINT_URL=f"http://{CLOSED}", TASKBRIDGE_CONNECT_TIMEOUT="2s")
    unreachable = taskbridge("enqueue", f"{jobs}.send_report", "[1]", cwd=tmp_path, timeout=30, env=env)
    assert unreachable.code == 2 and len(unreachable.error_lines) == 1, unreachable.stderr
    assert unreachable.error_lines[0].startswith(
        f"error: cannot use the broker at sqs:// (http://{CLOSED}, region us-east-1): "
    )
    assert unreachable.error_lines[0].endswith("TASKBRIDGE_SQS_ENDPOINT_URL and that the server is running there")


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_a_silent_broker_fails_within_connect_timeout(tmp_path: Path, jobs: str, broker: str) -> None:
    # A refused connection fails at once: its wall time is the command's start-up on this machine now.
    refused_env = settings("dramatiq", broker.format(port=CLOSED.split(":")[1]), TASKBRIDGE_CONNECT_TIMEOUT="1s")
    refused = taskbridge("status", jobs, "--once", cwd=tmp_path, env=refused_env, timeout=60)
    assert refused.code == 2, refused.stderr
    with silent_server() as port:
        env = settings("dramatiq", broker.format(port=port), TASKBRIDGE_CONNECT_TIMEOUT="1s")
        result = taskbridge("status", jobs, "--once", cwd=tmp_path, env=env, timeout=60)
    assert result.code == 2
    assert len(result.error_lines) == 1, result.stderr
    assert "cannot use the broker at" in result.stderr and "timed out" in result.stderr.lower()
    # The silent server costs about connect_timeout (1s) more, not the client library's own default.
    assert result.seconds < refused.seconds + 5, (result.seconds, refused.seconds)


def test_a_worker_refuses_to_start_without_its_coordination_store(tmp_path: Path, jobs: str) -> None:
    env = settings("dramatiq", REDIS, TASKBRIDGE_COORDINATION_URL=f"redis://:s3cretpw@{CLOSED}/1")
    result = taskbridge("worker", jobs, cwd=tmp_path, env=env, timeout=30)
    assert result.code == 2
    assert result.error_lines == [
        f"error: cannot use the coordination store at redis://:***@{CLOSED}/1: Error 111 connecting to "
        f"{CLOSED}. Connection refused; check TASKBRIDGE_COORDINATION_URL and that the server is running there"
    ]


def test_a_worker_told_not_to_wait_refuses_to_start_without_its_broker(tmp_path: Path, jobs: str) -> None:
    env = settings("celery", f"amqp://guest:guest@{CLOSED}//", TASKBRIDGE_BROKER_START_WAIT="0")
    result = taskbridge("worker", jobs, cwd=tmp_path, env=env)
    assert result.code == 2
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith(f"error: cannot use the broker at amqp://guest:***@{CLOSED}//: ")


@pytest.mark.parametrize(
    ("engine", "name", "message"),
    [
        ("dramatiq", "dramatiq.worker_timeout_ms", "Input should be a valid integer, unable to parse string as an"),
        ("celery", "celery.amqp_consumer_timeout", "Input should be a valid number, unable to parse string as a"),
    ],
)
def test_a_bad_engine_setting_is_a_two_line_error(
    tmp_path: Path, jobs: str, engine: str, name: str, message: str
) -> None:
    variable = "TASKBRIDGE_" + name.replace(".", "_").upper()
    result = taskbridge("worker", jobs, cwd=tmp_path, env=settings(engine, REDIS, **{variable: "fast"}), timeout=30)
    assert result.code == 2
    assert result.error_lines[0] == "error: invalid taskbridge settings:"
    assert result.error_lines[1].startswith(f"  {name} ({variable}): {message}")
    assert len(result.error_lines) == 2, result.stderr


def test_a_queue_name_sqs_cannot_hold_is_refused_in_one_line(tmp_path: Path, redis_url: str) -> None:
    module = write_jobs(tmp_path, "dotted", one_job("my.queue"))
    env = settings("celery", "sqs://", TASKBRIDGE_SQS_ENDPOINT_URL=SQS_ENDPOINT, TASKBRIDGE_COORDINATION_URL=redis_url)
    expected = (
        "job 'dotted.f': queue 'my.queue' cannot be an SQS queue: its name there, 'taskbridge-my.queue', may hold "
        "only letters, digits, '-' and '_', at most 80 characters"
    )
    enqueue = taskbridge("enqueue", f"{module}.f", cwd=tmp_path, env=env)
    assert enqueue.code == 2
    assert len(enqueue.error_lines) == 1 and expected in enqueue.stderr, enqueue.stderr
    worker = taskbridge("worker", module, cwd=tmp_path, env=env)
    assert worker.code == 2
    assert len(worker.error_lines) == 1 and expected in worker.stderr, worker.stderr


def test_the_worker_banner_says_what_is_in_force(tmp_path: Path) -> None:
    module = write_jobs(tmp_path)
    (tmp_path / "taskbridge.toml").write_text('default_queue = "default"\n', encoding="utf-8")
    (tmp_path / ".git").mkdir()
    assert COMMAND
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    worker = subprocess.Popen(
        [COMMAND, "worker", module],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and "taskbridge worker:" not in line:
            assert worker.stderr is not None
            line = worker.stderr.readline()
    finally:
        worker.terminate()
        worker.wait(10)
    assert "engine=memory broker=memory:// coordination=memory://" in line
    assert f"config={tmp_path / 'taskbridge.toml'}" in line and "queues=default,emails" in line


def test_status_keeps_long_queue_names_whole_at_80_columns(tmp_path: Path, redis_url: str) -> None:
    name = "ux_emails_transactional_priority_high"
    module = write_jobs(tmp_path, "longq", one_job(name))
    result = taskbridge("status", module, "--once", cwd=tmp_path, env=settings("dramatiq", redis_url))
    assert result.code == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    assert "…" not in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["queue"])
    assert header.split() == ["queue", "depth", "letters", "jobs/s", "failed/s", "p50", "p95", "running"]
    lines = result.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith(name[:8]))
    folded = []
    for line in lines[row:]:
        if not line.strip():
            break
        folded.append(line.split()[0])
    assert "".join(folded) == name, result.stdout
    assert "engine=dramatiq broker=redis://127.0.0.1:6379/0" in result.stdout


def test_a_connection_lost_during_a_command_is_one_line(
    capsys: pytest.CaptureFixture[str], clean_env: None, redis_url: str
) -> None:
    import redis

    from taskbridge.cli.support import fail
    from taskbridge.config import load_settings, set_settings

    set_settings(load_settings(engine="celery", broker_url="redis://:s3cretpw@127.0.0.1:1/0"))
    try:
        with pytest.raises(redis.ConnectionError) as lost:
            redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1).ping()
        with pytest.raises(SystemExit) as caught:
            fail(lost.value)
    finally:
        set_settings(None)
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: a server connection failed (Error 111 connecting to")
    assert "broker at redis://:***@127.0.0.1:1/0" in lines[0] and "s3cretpw" not in lines[0]
