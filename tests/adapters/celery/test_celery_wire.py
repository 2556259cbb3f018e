"""The Celery worker's guarded read, on real Redis, RabbitMQ and moto's SQS: whatever an item in its
queue holds, it runs or ends in the dead letters of that queue, and the worker goes on."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import celery_jobs as jobs
import pika
import pytest
from dramatiq import Message as DramatiqMessage
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from support import open_harness
from taskbridge_celery.testing import put_raw
from taskbridge_celery.wire import BODY_HEAD, BODY_TAIL, CONTENT_ENCODING, CONTENT_TYPE, message_body, task_headers

from taskbridge import Envelope, get_engine, get_settings
from taskbridge.dead import DeadLetters
from taskbridge.testing import Harness
from taskbridge.testing.harness import RawItem

SETTINGS: dict[str, str | None] = {"TASKBRIDGE_VISIBILITY_TIMEOUT": "10"}

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_maybe = st.one_of(st.none(), _json_values)
_properties = st.one_of(
    _json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "body_encoding": st.sampled_from([None, "base64", "utf-8", "gzip", 7]),
            "delivery_tag": _maybe,
            "delivery_info": st.one_of(st.none(), st.dictionaries(st.sampled_from(["routing_key", "x"]), _maybe)),
            "priority": _maybe,
        },
    ),
)


def _celery_bodies() -> st.SearchStrategy[Any]:
    """Celery protocol-2 bodies ``[args, kwargs, embed]`` with anything in each place."""
    return st.tuples(_maybe, _maybe, _maybe).map(list)


def _kombu_messages() -> st.SearchStrategy[dict[str, Any]]:
    """kombu's JSON message (Redis list item, SQS body) with fields missing, null or of any type."""
    body = st.one_of(
        _maybe,
        _celery_bodies().map(lambda b: base64.b64encode(json.dumps(b).encode()).decode()),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    )
    task = st.sampled_from(["cq.echo", "nope", None])
    headers = st.one_of(_maybe, st.fixed_dictionaries({"task": task, "id": _maybe}))
    return st.fixed_dictionaries(
        {},
        optional={
            "body": body,
            "content-type": st.sampled_from(["application/json", "application/x-python-serialize", None, 3]),
            "content-encoding": st.sampled_from(["utf-8", "binary", None]),
            "headers": headers,
            "properties": _properties,
        },
    )


def _bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=120),
        _json_values.map(lambda v: json.dumps(v).encode()),
        _celery_bodies().map(lambda v: json.dumps(v).encode()),
        _kombu_messages().map(lambda v: json.dumps(v).encode()),
    )


def _amqp_items() -> st.SearchStrategy[RawItem]:
    headers = st.dictionaries(
        st.sampled_from(["task", "id", "lang", "eta", "timelimit", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["cq.echo", "nope", "", "x"])),
        max_size=5,
    )
    content_type = st.sampled_from([None, "application/json", "application/x-python-serialize", "text/plain"])
    return st.builds(RawItem, st.just("generated"), _bodies(), content_type, headers)


@pytest.fixture(params=["redis", "amqp", "sqs"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(f"celery-{request.param}", tmp_path, "celery_jobs", SETTINGS) as harness:
        yield harness


def _ran(run: Harness) -> list[dict[str, Any]]:
    return run.events("ran", "echo")


def test_generated_items_each_run_or_end_in_the_dead_letters_and_the_worker_goes_on(run: Harness) -> None:
    engine: Any = get_engine()
    run.start_workers(concurrency=1)
    jobs.echo.enqueue(-1)
    run.wait_for(lambda: _ran(run), 60, "the first valid job never ran")
    pids = {e["pid"] for e in _ran(run)}
    amqp = engine.broker.scheme == "amqp"
    sent: list[RawItem] = []

    # No shrinking: once the worker is gone every later example fails too, and a shrunk one would
    # name an innocent item; the first failing example is the item that broke the worker.
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate),
    )
    @given(item=_amqp_items() if amqp else _bodies().map(lambda body: RawItem("generated", body)))
    @example(item=RawItem("kombu message without a body", b'{"properties": {}}', "application/json"))
    @example(item=RawItem("kombu message with a null body", b'{"body": null, "properties": {}, "headers": null}'))
    def each_item_ends_as_run_or_dead(item: RawItem) -> None:
        put_raw(engine, run.queue, item)
        sent.append(item)
        run.wait_for(
            lambda: len(_ran(run)) - 1 + run.depth(run.dead_queue) >= len(sent),
            30,
            f"item {len(sent)} neither ran nor reached the dead letters: {item!r}",
        )

    each_item_ends_as_run_or_dead()
    jobs.echo.enqueue(-2)
    run.wait_for(lambda: any(e["n"] == -2 for e in _ran(run)), 60, "the worker stopped after the generated items")
    time.sleep(1.0)
    handled = len(_ran(run)) - 2 + run.depth(run.dead_queue)
    assert handled == len(sent), f"{len(sent)} items written, {handled} ran or dead-lettered"
    assert run.depth(run.queue) == 0, "an item was left in the queue"
    assert {e["pid"] for e in _ran(run)} == pids, "the worker process was replaced"


@pytest.mark.parametrize("transport", ["amqp", "sqs"])
def test_a_dramatiq_message_in_a_queue_a_celery_worker_consumes_runs_its_envelope(
    transport: str, tmp_path: Path
) -> None:
    with open_harness(f"celery-{transport}", tmp_path, "celery_jobs", SETTINGS) as run:
        run.start_workers()
        jobs.echo.enqueue(40)  # the queue exists, declared as the engines declare it, before pika writes to it
        run.wait_for(lambda: _ran(run), 60, "the first job never ran")
        engine: Any = get_engine()
        envelope = Envelope(job=jobs.echo.name, queue=run.queue, args=[41])
        message = DramatiqMessage(
            queue_name=run.queue,
            actor_name=envelope.job,
            args=(envelope.encode(),),
            kwargs={},
            options={},
            message_id=envelope.id,
            message_timestamp=int(time.time() * 1000),
        )
        unknown = Envelope(job="cq.no_such_job", queue=run.queue)
        stray = DramatiqMessage(
            queue_name=run.queue,
            actor_name=unknown.job,
            args=(unknown.encode(),),
            kwargs={},
            options={},
        )
        bodies = [message.encode(), stray.encode()]
        if transport == "amqp":
            _publish_with_pika(engine.broker.url, run.queue, bodies)
        else:
            # As dramatiq-sqs sends them: base64 of Dramatiq's JSON.
            for body in bodies:
                put_raw(engine, run.queue, RawItem("dramatiq", base64.b64encode(body)))
        run.wait_for(lambda: len(_ran(run)) == 2, 30, "the envelope inside the Dramatiq message never ran")
        run.wait_for(lambda: run.depth(run.dead_queue) == 1, 15, "the unknown job's message is a dead letter")
        time.sleep(1.0)
        assert sorted(e["n"] for e in _ran(run)) == [40, 41]
        assert run.depth(run.queue) == 0


def _publish_with_pika(broker_url: str, queue: str, bodies: list[bytes]) -> None:
    url = urlsplit(broker_url)
    credentials = pika.PlainCredentials(url.username or "guest", url.password or "guest")
    connection = pika.BlockingConnection(pika.ConnectionParameters(url.hostname, url.port, "/", credentials))
    try:
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def _task_item(engine: Any, queue: str, body: bytes) -> RawItem:
    """``body`` in a task message of ``cq.echo`` with the headers taskbridge's producer writes, as the
    engine's transport holds it (an AMQP message, or kombu's JSON message in a Redis list or SQS)."""
    headers = task_headers(jobs.echo.name, uuid.uuid4().hex, "<test>")
    if engine.broker.scheme == "amqp":
        return RawItem("task message", body, CONTENT_TYPE, headers)
    message = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-type": CONTENT_TYPE,
        "content-encoding": CONTENT_ENCODING,
        "headers": headers,
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": uuid.uuid4().hex,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
        },
    }
    return RawItem("task message", json.dumps(message).encode())


def _dead_bodies(run: Harness) -> list[bytes]:
    bodies = []
    for batch in DeadLetters(get_engine(), get_settings()).scan(run.queue):
        for letter in batch:
            assert letter.body is not None
            raw = base64.b64decode(letter.body) if letter.body_encoding == "base64" else letter.body.encode()
            bodies.append(raw)
    return bodies


def test_a_body_in_taskbridges_shape_runs_its_envelope_or_is_dead_lettered_with_its_exact_bytes(
    run: Harness,
) -> None:
    """The worker hands a body shaped as taskbridge writes it to the job's task unread: whatever
    stands where the envelope should be, the envelope runs, or the whole body is a dead letter."""
    engine: Any = get_engine()
    run.start_workers(concurrency=1)
    jobs.echo.enqueue(-1)
    run.wait_for(lambda: _ran(run), 60, "the first valid job never ran")
    as_text = json.dumps(Envelope(job=jobs.echo.name, queue=run.queue, args=[5]).encode())
    not_utf8 = BODY_HEAD.encode() + b"\xff\xfe" + BODY_TAIL.encode()
    bad = [message_body("{not json"), message_body("1"), message_body("[]"), not_utf8]
    for body in [*bad, message_body(as_text)]:
        put_raw(engine, run.queue, _task_item(engine, run.queue, body))
    jobs.echo.enqueue(6)
    run.wait_for(lambda: len(_ran(run)) >= 3, 60, "the envelope given as text, or the job behind, never ran")
    run.wait_for(lambda: run.depth(run.dead_queue) >= len(bad), 30, "the bad bodies are not all dead letters")
    time.sleep(1.0)
    assert sorted(e["n"] for e in _ran(run)) == [-1, 5, 6]
    assert sorted(_dead_bodies(run)) == sorted(bad), "each dead letter holds the whole body, byte for byte"
    assert run.depth(run.queue) == 0


def test_a_job_argument_shaped_like_kombus_typed_values_reaches_the_job_as_sent(run: Harness) -> None:
    """kombu's JSON reader turns ``{"__type__": ..., "__value__": ...}`` objects into Python values;
    the envelope's arguments never go through it."""
    typed = {"__type__": "datetime", "__value__": "2020-01-01T00:00:00"}
    jobs.echo.enqueue(1, payload=typed)
    run.start_workers(concurrency=1)
    [ran] = run.wait_for(lambda: _ran(run), 60, "the job never ran")
    assert ran["payload"] == typed
