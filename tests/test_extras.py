"""Each documented install, ``pip install -e '.[engine,transport]'`` into a fresh venv, runs a job on a
real worker; and an engine imports only the transport it is configured for."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
SQS_ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
BROKERS = {"redis": "redis://127.0.0.1:6379/0", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//", "sqs": "sqs://"}
NOT_INSTALLED = {
    "celery": ["dramatiq", "pika"],
    "dramatiq": ["celery", "pika", "boto3"],
}
"""Packages an install of the engine with one transport must not bring (besides the other transports')."""

JOBS = """
import os
from taskbridge import job

@job()
def touch(text: str) -> None:
    with open(os.environ["EXTRAS_OUT"], "a") as out:
        out.write(text + "\\n")
"""


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """One install at a time: an editable install builds its metadata in the repository."""
    with open(Path(tempfile.gettempdir()) / "taskbridge-extras-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _requirements(extras: str) -> list[str]:
    """What ``pip install '.[extras]'`` asks for, read from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in extras.split(","):
        wanted += project["optional-dependencies"][extra]
    return wanted


def _fresh_venv(directory: Path, extras: str) -> Path:
    """A new venv with ``pip install -e 'REPO[extras]'``. The dependencies are installed first, in
    parallel with other tests; only the editable install of the repository itself takes the lock."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, timeout=120)
    pip = [str(directory / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    for step in (_requirements(extras), ["-e", f"{REPO}[{extras}]"]):
        with _install_lock() if step[0] == "-e" else contextlib.nullcontext():
            done = subprocess.run([*pip, *step], capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"pip install {step}:\n{done.stdout}{done.stderr}"
    return directory / "bin"


def _installed(bin_dir: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(bin_dir / "python"), "-c", code], timeout=60, check=False).returncode == 0


@pytest.mark.extras
@pytest.mark.parametrize("transport", ["redis", "rabbitmq", "sqs"])
@pytest.mark.parametrize("engine", ["celery", "dramatiq"])
def test_an_install_of_one_engine_and_one_transport_runs_a_job(tmp_path: Path, engine: str, transport: str) -> None:
    started = time.monotonic()
    bin_dir = _fresh_venv(tmp_path / "venv", f"{engine},{transport}")
    installed = time.monotonic()
    others = [name for name in NOT_INSTALLED[engine] if not (transport == "rabbitmq" and name == "pika")]
    if transport == "sqs":
        others = [name for name in others if name not in ("dramatiq", "boto3")]  # dramatiq-sqs needs dramatiq
    assert not [name for name in others if _installed(bin_dir, name)], f"[{engine},{transport}] installs too much"

    (tmp_path / "extras_jobs.py").write_text(JOBS, encoding="utf-8")
    out = tmp_path / "ran.txt"
    run = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    env.update(
        PYTHONPATH=str(tmp_path),
        EXTRAS_OUT=str(out),
        TASKBRIDGE_ENGINE=engine,
        TASKBRIDGE_BROKER_URL=BROKERS[transport],
        TASKBRIDGE_NAMESPACE=f"tbx{run}",
        TASKBRIDGE_DEFAULT_QUEUE=f"tbx{run}",
    )
    if transport == "sqs":
        env.update(
            TASKBRIDGE_SQS_ENDPOINT_URL=SQS_ENDPOINT, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
        )
    taskbridge = str(bin_dir / "taskbridge")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [taskbridge, "worker", "extras_jobs", "--concurrency", "1"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        enqueue = subprocess.run(
            [taskbridge, "enqueue", "extras_jobs.touch", '["hello"]'],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert enqueue.returncode == 0, enqueue.stderr
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
        log_text = (tmp_path / "worker.log").read_text(errors="replace")
        assert out.exists() and out.read_text() == "hello\n", f"the job did not run:\n{log_text[-4000:]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)

    contract = subprocess.run(
        [taskbridge, "contract"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert contract.returncode == 2
    assert contract.stderr.strip() == "error: taskbridge contract needs pytest: pip install 'taskbridge-jobs[contract]'"
    print(f"[{engine},{transport}]: install {installed - started:.1f}s, job {time.monotonic() - installed:.1f}s")


IMPORTS = """
import sys
from taskbridge import configure, get_engine
configure(engine={engine!r}, broker_url={broker!r})
engine = get_engine()
engine.depth("tbx-imports")
if {engine!r} == "dramatiq":
    engine.broker
loaded = sorted(m for m in {unwanted!r} if m in sys.modules)
print(",".join(loaded))
"""


@pytest.mark.parametrize(
    ("engine", "transport", "unwanted"),
    [
        ("celery", "redis", ["botocore", "boto3", "kombu.transport.SQS", "taskbridge_celery.sqs", "pika"]),
        ("celery", "rabbitmq", ["botocore", "boto3", "kombu.transport.SQS", "taskbridge_celery.sqs", "redis"]),
        ("dramatiq", "redis", ["botocore", "boto3", "dramatiq_sqs", "pika"]),
        ("dramatiq", "rabbitmq", ["botocore", "boto3", "dramatiq_sqs", "dramatiq.brokers.redis"]),
    ],
)
def test_an_engine_imports_only_the_transport_it_uses(
    tmp_path: Path, redis_url: str, engine: str, transport: str, unwanted: list[str]
) -> None:
    code = IMPORTS.format(engine=engine, broker=BROKERS[transport], unwanted=unwanted)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{engine} on {transport} imported {done.stdout.strip()}"


MISSING = """
import sys
for module in {missing!r}:
    sys.modules[module] = None  # as if not installed
from taskbridge import configure, get_engine
from taskbridge.errors import ConfigurationError
configure(engine={engine!r}, broker_url={broker!r})
try:
    get_engine()
except ConfigurationError as exc:
    print(exc)
"""


@pytest.mark.parametrize(
    ("engine", "transport", "missing", "message"),
    [
        (
            "celery",
            "redis",
            ["redis"],
            "the celery engine on redis:// needs redis, which is not installed: pip install 'taskbridge-jobs[redis]'",
        ),
        (
            "dramatiq",
            "rabbitmq",
            ["pika"],
            "the dramatiq engine on amqp:// needs pika, which is not installed: "
            "pip install 'taskbridge-jobs[rabbitmq]'",
        ),
        (
            "dramatiq",
            "sqs",
            ["boto3", "dramatiq_sqs"],
            "the dramatiq engine on sqs:// needs boto3, dramatiq_sqs, "
            "which are not installed: pip install 'taskbridge-jobs[sqs]'",
        ),
    ],
)
def test_a_missing_transport_package_names_its_extra(
    tmp_path: Path, engine: str, transport: str, missing: list[str], message: str
) -> None:
    code = MISSING.format(missing=missing, engine=engine, broker=BROKERS[transport])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == message, done.stdout + done.stderr
