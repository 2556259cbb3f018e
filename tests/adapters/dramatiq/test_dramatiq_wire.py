"""The Dramatiq adapter's wire layer on real Redis, RabbitMQ and moto's SQS: any body a consumer reads
becomes a message Dramatiq can handle, and a message written by Celery runs under a Dramatiq worker."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import open_harness
from taskbridge_dramatiq import DramatiqEngine
from taskbridge_dramatiq.actors import to_message
from taskbridge_dramatiq.brokers import UNKNOWN_JOB_ACTOR, build_broker
from taskbridge_dramatiq.brokers.common import message_bodies
from taskbridge_dramatiq.brokers.guard import CarriedItem, raw_item, read_item
from taskbridge_dramatiq.settings import DramatiqSettings
from taskbridge_dramatiq.testing import put_raw, sqs_text

from taskbridge import Envelope
from taskbridge.config import load_settings
from taskbridge.envelope import EnvelopeBatch, json_arguments
from taskbridge.testing import Harness, unavailable_reason
from taskbridge.testing import jobs as contract_jobs
from taskbridge.testing.harness import DEFAULT_SQS_ENDPOINT, Combination, RawItem
from taskbridge.wire import unwrap

BROKER_URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
    "sqs": "sqs://",
}
SQS_ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT)
ECHO = contract_jobs.echo.name


@dataclass
class Wire:
    """One queue of one transport: a producer engine to write raw items, a worker broker's consumer."""

    transport: str
    engine: DramatiqEngine
    queue: str
    broker: Any
    consumer: Any

    def put(self, body: bytes) -> None:
        put_raw(self.engine, self.queue, RawItem("generated", body))

    def receive(self) -> Any:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = next(self.consumer)
            if message is not None:
                return message
        raise AssertionError(f"{self.transport}: nothing was delivered from {self.queue}")

    def unacknowledged(self) -> int:
        """Redis: ids this worker fetched and has not acknowledged (other transports keep no such set)."""
        if self.transport != "redis":
            return 0
        return int(self.broker.client.scard(f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue}"))

    def as_stored(self, body: bytes) -> bytes | str:
        """The body as the transport hands it back (SQS holds text)."""
        return sqs_text(body) if self.transport == "sqs" else body


@pytest.fixture(scope="module", params=sorted(BROKER_URLS))
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    transport = request.param
    reason = unavailable_reason(Combination("dramatiq", BROKER_URLS[transport]))
    if reason:
        pytest.skip(reason)
    config = load_settings(
        engine="dramatiq",
        broker_url=BROKER_URLS[transport],
        namespace=f"tbwire{uuid.uuid4().hex[:8]}",
        sqs_endpoint_url=SQS_ENDPOINT if transport == "sqs" else None,
    )
    engine = DramatiqEngine(config)
    queue = f"wire{uuid.uuid4().hex[:8]}"
    broker: Any = build_broker(config, DramatiqSettings(), worker=True, middleware=[])
    broker.declare_queue(queue)
    consumer = broker.consume(queue, prefetch=10, timeout=1000)
    try:
        yield Wire(transport, engine, queue, broker, consumer)
    finally:
        consumer.close()
        engine.purge(queue)
        broker.close()
        engine.close()


_DRAMATIQ_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
_MISSING = object()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def dramatiq_like(draw: st.DrawFn) -> bytes:
    """A Dramatiq message around a valid envelope, each field kept, dropped or replaced by any JSON."""
    envelope = Envelope(job=ECHO, queue="q", args=["generated"]).encode()
    valid = {
        "queue_name": "q",
        "actor_name": ECHO,
        "args": [envelope],
        "kwargs": {},
        "options": {},
        "message_id": "m",
        "message_timestamp": 1,
    }
    fields = {}
    for name in _DRAMATIQ_FIELDS:
        value = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
        if value == "keep":
            fields[name] = valid[name]
        elif value == "replace":
            fields[name] = draw(json_values)
    text = json.dumps(fields).encode()
    return base64.b64encode(text) if draw(st.booleans()) else text


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    dramatiq_like(),
)


@settings(max_examples=300, deadline=None)
@given(
    body=bodies,
    content_type=st.sampled_from([None, "application/json", "application/x-python-serialize", "text/plain"]),
    headers=st.none() | st.dictionaries(st.sampled_from(["task", "id", "lang"]), json_values, max_size=3),
)
def test_read_item_never_raises_and_passes_on_only_well_formed_dramatiq_messages(
    body: bytes, content_type: str | None, headers: dict[str, Any] | None
) -> None:
    message = read_item(body, "q", content_type=content_type, headers=headers, known_actors={ECHO})
    item = raw_item(message)
    if item is None:
        found = unwrap(body, content_type=content_type, headers=headers)
        assert found.form == "dramatiq" and found.payload is not None
        assert isinstance(message.options, dict) and isinstance(message.kwargs, dict)
    else:
        assert item == CarriedItem(body, content_type, headers or None)
    assert message.queue_name == "q"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_a_consumer_reads_becomes_a_message_dramatiq_can_handle(wire: Wire, body: bytes) -> None:
    wire.put(body)
    message = wire.receive()
    try:
        _check(wire, body, message)
    finally:
        wire.consumer.ack(message)
    assert wire.engine.depth(wire.queue) == 0 and wire.unacknowledged() == 0, "the item left something behind"


def _check(wire: Wire, body: bytes, message: Any) -> None:
    item = raw_item(message)
    stored = wire.as_stored(body)
    if item is None:
        found = unwrap(stored)
        assert found.form == "dramatiq" and found.envelope is not None, "only a well-formed Dramatiq message passes"
        assert isinstance(message.options, dict) and len(message.args) == 1
    else:
        assert item.body == stored, "the stand-in carries the item exactly as the transport held it"
        assert message.actor_name in (UNKNOWN_JOB_ACTOR, ECHO)
    assert message.queue_name == wire.queue


@pytest.mark.parametrize("transport", ["amqp", "sqs"])
def test_a_celery_message_in_a_dramatiq_queue_runs_once(transport: str, tmp_path: Path) -> None:
    with open_harness(f"dramatiq-{transport}", tmp_path, "dramatiq_jobs") as harness:
        harness.start_workers()
        envelope = Envelope(job=ECHO, queue=harness.queue, args=["from celery"])
        _publish_as_celery(harness, transport, envelope.job, [envelope.encode()], {}, task_id=envelope.id)
        harness.wait_for(lambda: harness.events("ran", "echo"), 40, "the Celery-format message never ran")
        time.sleep(2.0)
        assert [event["args"] for event in harness.events("ran", "echo")] == [["from celery"]]
        assert harness.depth(harness.dead_queue) == 0, "a Celery-format message is not dead-lettered"
        assert harness.depth(harness.queue) == 0


@pytest.mark.parametrize("transport", ["amqp", "sqs"])
def test_an_old_celery_producers_message_in_a_dramatiq_queue_runs_the_aliased_job(
    transport: str, tmp_path: Path
) -> None:
    import legacy_jobs

    with open_harness(f"dramatiq-{transport}", tmp_path, "legacy_jobs") as harness:
        harness.start_workers()
        _publish_as_celery(harness, transport, legacy_jobs.CELERY_NAME, [42], {"day": "monday"})
        [ran] = harness.wait_for(lambda: harness.events("ran", "send_report"), 40, "the old message never ran")
        assert (ran["user_id"], ran["day"]) == (42, "monday")
        assert harness.depth(harness.dead_queue) == 0


def _publish_as_celery(
    harness: Harness, transport: str, task_name: str, args: list[Any], kwargs: dict[str, Any], task_id: str = ""
) -> None:
    """Publish a task exactly as Celery's producer does (task protocol 2 through kombu)."""
    from celery import Celery
    from kombu import Connection

    task_id = task_id or uuid.uuid4().hex
    task = Celery(set_as_current=False).amqp.as_task_v2(task_id, task_name, args=args, kwargs=kwargs)
    broker: Any = harness.engine.broker  # type: ignore[attr-defined]
    if transport == "amqp":
        broker.declare_queue(harness.queue, ensure=True)  # as the worker declares it, not yet perhaps
        url, options = BROKER_URLS["amqp"], {}
    else:
        endpoint = SQS_ENDPOINT.split("://", 1)[1]
        url = f"sqs://taskbridge:taskbridge@{endpoint}"
        options = {
            "predefined_queues": {harness.queue: {"url": broker._queue_url(harness.queue)}},
            "region": "us-east-1",
            "is_secure": False,
            "sqs_base64_encoding": False,  # as taskbridge's Celery engine writes SQS bodies
        }
    with Connection(url, transport_options=options) as connection:
        connection.Producer().publish(
            task.body,
            exchange="",
            routing_key=harness.queue,
            headers=task.headers,
            serializer="json",
            retry=False,
            **task.properties,
        )


def test_a_well_formed_dramatiq_message_passes_addressed_to_the_queue_it_was_read_from() -> None:
    envelope = Envelope(job=ECHO, queue="q", args=[1]).encode()
    body = _dramatiq_body(queue_name="elsewhere", args=[envelope])
    message = read_item(body, "q")
    assert raw_item(message) is None
    assert (message.queue_name, message.actor_name, message.args) == ("q", ECHO, (envelope,))
    assert read_item(base64.b64encode(body), "q").args == (envelope,), "dramatiq-sqs writes base64"


@pytest.mark.parametrize(
    "changes",
    [{"options": None}, {"message_id": _MISSING}, {"args": None}, {"kwargs": []}, {"extra": 1}],
    ids=["options null", "no message_id", "args null", "kwargs a list", "an unknown field"],
)
def test_an_incomplete_dramatiq_message_becomes_a_stand_in_for_the_runner(changes: dict[str, Any]) -> None:
    body = _dramatiq_body(**changes)
    message = read_item(body, "q.DQ")
    item = raw_item(message)
    assert item is not None and item.body == body
    assert message.queue_name == "q.DQ" and message.actor_name == UNKNOWN_JOB_ACTOR
    assert isinstance(message.options, dict) and "eta" not in message.options


def test_a_celery_body_names_the_actor_of_its_job_when_declared() -> None:
    envelope = Envelope(job=ECHO, queue="q").encode()
    body = json.dumps([[envelope], {}, {"callbacks": None}]).encode()
    message = read_item(body, "q", content_type="application/json", known_actors={ECHO})
    assert message.actor_name == ECHO and raw_item(message) == CarriedItem(body, "application/json")


def test_a_pickle_body_is_never_a_dramatiq_message() -> None:
    message = read_item(b"\x80\x02}q\x00.", "q", content_type="application/x-python-serialize")
    assert raw_item(message) is not None and message.actor_name == UNKNOWN_JOB_ACTOR


def _dramatiq_body(**changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "queue_name": "q",
        "actor_name": ECHO,
        "args": [Envelope(job=ECHO, queue="q").encode()],
        "kwargs": {},
        "options": {},
        "message_id": "m",
        "message_timestamp": 1,
        **changes,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not _MISSING}).encode()


@pytest.mark.parametrize("transport", sorted(BROKER_URLS))
def test_a_dramatiq_message_naming_another_queue_runs_once_and_the_worker_keeps_going(
    transport: str, tmp_path: Path
) -> None:
    with open_harness(f"dramatiq-{transport}", tmp_path, "dramatiq_jobs") as harness:
        harness.start_workers(concurrency=1)
        envelope = Envelope(job=ECHO, queue=harness.queue, args=["misaddressed"]).encode()
        body = _dramatiq_body(queue_name="some.other.queue", args=[envelope])
        put_raw(harness.engine, harness.queue, RawItem("another queue", wire_body(harness, body)))
        contract_jobs.echo.enqueue("after")
        harness.wait_for(lambda: len(harness.events("ran", "echo")) >= 2, 40, "the worker stopped after the message")
        time.sleep(1.5)
        assert sorted(event["args"][0] for event in harness.events("ran", "echo")) == ["after", "misaddressed"]
        assert harness.depth(harness.queue) == 0 and harness.depth(harness.dead_queue) == 0


def wire_body(harness: Harness, body: bytes) -> bytes:
    """``body`` as Dramatiq stores it on the harness's transport (base64 on SQS)."""
    return base64.b64encode(body) if harness.combination.broker_url.startswith("sqs") else body


def test_a_batch_is_rendered_as_the_dramatiq_messages_of_its_envelopes() -> None:
    batch = EnvelopeBatch(
        ECHO, "q", enqueued_at=1_800_000_000.123, expires_at=1_800_000_600.0, not_before=None, headers={}
    )
    for args, kwargs in [((1,), {}), ((), {"payload": {"text": 'zürich ✓ "quoted"'}})]:
        batch.add(args, kwargs, *json_arguments(ECHO, args, kwargs))
    options = ['{"redis_message_id":"b-0"}', '{"redis_message_id":"b-1","eta":1800000001000}']
    bodies = message_bodies(batch, "q.DQ", options)
    expected = [
        to_message(envelope).copy(queue_name="q.DQ", options=json.loads(option)).encode()
        for envelope, option in zip(batch, options, strict=True)
    ]
    assert bodies == expected
    assert [read_item(body, "q.DQ").args for body in bodies] == [(text,) for text in batch.texts]
