"""The broker URL parsed once: kinds, display, limits, SQS batches and queue names, shared by both engines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskbridge
from taskbridge import JobDefinitionError, job
from taskbridge.config import load_settings, set_settings
from taskbridge.transports import SQS_BATCH, SQS_LOCAL_CREDENTIALS, parse


@pytest.mark.parametrize(
    ("url", "kind", "shown"),
    [
        ("redis://:s3cret@cache:6380/2", "redis", "redis://:***@cache:6380/2"),
        ("rediss://cache/0", "redis", "rediss://cache/0"),
        ("amqp://guest:guest@mq:5672/jobs", "amqp", "amqp://guest:***@mq:5672/jobs"),
        ("pyamqp://mq//", "amqp", "pyamqp://mq//"),
        ("memory://?autostart=0", "memory", "memory://?autostart=0"),
    ],
)
def test_a_url_is_parsed_into_its_transport(url: str, kind: str, shown: str) -> None:
    transport = parse(url)
    assert (transport.kind, transport.display) == (kind, shown)


def test_the_parts_clients_need() -> None:
    amqp = parse("amqps://us%40er:p%2Fw@mq.example.com/my%2Fvhost?ssl_cert_reqs=required")
    assert (amqp.host, amqp.port, amqp.username, amqp.password) == ("mq.example.com", None, "us@er", "p/w")
    assert (amqp.vhost, amqp.tls, amqp.options) == ("my/vhost", True, {"ssl_cert_reqs": "required"})
    assert parse("amqp://mq//").vhost == "/" and parse("amqp://mq").vhost == "/"
    assert "p/w" not in repr(amqp) and "p%2Fw" not in repr(amqp), "the password never shows in a log"
    sqs = parse("sqs://", sqs_endpoint_url="http://127.0.0.1:4566", sqs_region="eu-west-1")
    assert sqs.display == "sqs:// (http://127.0.0.1:4566, region eu-west-1)"
    assert (sqs.max_message_bytes, sqs.max_delay) == (256 * 1024, 900.0)
    assert parse("redis://cache/0").batch is None and parse("redis://cache/0").max_delay is None


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported scheme 'kafka'"):
        parse("kafka://broker:9092")


def test_sqs_batches_hold_at_most_ten_messages_and_256_kib() -> None:
    small = [b"x" * 100] * 25
    assert [len(batch) for batch in SQS_BATCH.split(small, len)] == [10, 10, 5]
    large = [b"x" * 100_000] * 5  # two fit in 256 KiB, three do not
    assert [len(batch) for batch in SQS_BATCH.split(large, len)] == [2, 2, 1]
    assert list(SQS_BATCH.split([b"x" * 300_000], len)) == [[b"x" * 300_000]], "one item alone is never split"


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def test_both_engines_give_a_local_sqs_endpoint_the_same_credentials(no_aws_credentials: None) -> None:
    from taskbridge_celery.broker import broker_for
    from taskbridge_dramatiq.brokers import _boto_options

    settings = load_settings(engine="celery", broker_url="sqs://", sqs_endpoint_url="http://127.0.0.1:4566")
    celery_url = broker_for(settings, settings.celery).url
    dramatiq = _boto_options(settings)
    assert celery_url == f"sqs://{SQS_LOCAL_CREDENTIALS}:{SQS_LOCAL_CREDENTIALS}@127.0.0.1:4566"
    assert (dramatiq["aws_access_key_id"], dramatiq["aws_secret_access_key"]) == (SQS_LOCAL_CREDENTIALS,) * 2


@pytest.fixture
def on_sqs(clean_env: None) -> Iterator[None]:
    set_settings(load_settings(engine="celery", broker_url="sqs://", sqs_endpoint_url="http://127.0.0.1:4566"))
    yield
    set_settings(None)


@pytest.mark.usefixtures("job_registry")
def test_a_queue_sqs_cannot_hold_is_refused_when_the_job_is_declared(on_sqs: None) -> None:
    with pytest.raises(JobDefinitionError) as caught:

        @job(name="transports.dotted", queue="my.queue")
        def dotted() -> None: ...

    message = str(caught.value)
    assert message.startswith("job 'transports.dotted': queue 'my.queue' cannot be an SQS queue")
    assert "may hold only letters, digits, '-' and '_', at most 80 characters" in message


@pytest.mark.usefixtures("job_registry")
def test_the_same_queue_is_accepted_where_the_transport_can_hold_it(clean_env: None) -> None:
    set_settings(load_settings(engine="celery", broker_url="redis://127.0.0.1:6379/0"))
    try:

        @job(name="transports.dotted_on_redis", queue="my.queue")
        def dotted() -> None: ...

    finally:
        set_settings(None)
    assert dotted.spec.queue == "my.queue"


BLOCKED = ("amqp", "pika", "boto3", "botocore", "kombu", "celery", "dramatiq")
IMPORT_ALL = """
import importlib, pkgutil, sys

BLOCKED = set(sys.argv[1].split(","))


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the core must not import it", name=name)
        return None


sys.meta_path.insert(0, Blocked())
import taskbridge

names = [m.name for m in pkgutil.walk_packages(taskbridge.__path__, "taskbridge.")]
for name in names:
    if not name.startswith("taskbridge.testing") and name != "taskbridge.__main__":
        importlib.import_module(name)
print(len(names))
"""


def test_the_core_imports_no_transport_or_engine_library(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, ",".join(BLOCKED)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= len(list(Path(taskbridge.__file__).parent.glob("*.py"))) - 1


def test_no_core_module_imports_a_transport_or_engine_library_even_on_first_use() -> None:
    core = Path(taskbridge.__file__).parent
    found = []
    for path in sorted(core.rglob("*.py")):
        if path.relative_to(core).parts[0] == "testing":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found += [f"{path.relative_to(core)}:{node.lineno} {m}" for m in modules if m.split(".")[0] in BLOCKED]
    assert found == []
