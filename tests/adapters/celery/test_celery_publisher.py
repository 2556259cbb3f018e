"""The Celery engine's Redis batches: stored exactly as kombu's producer stores a message."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery_jobs as jobs
import pytest
import redis
from support import open_harness
from taskbridge_celery.redis_batch import stored_messages

from taskbridge import Envelope, get_engine
from taskbridge.envelope import EnvelopeBatch, json_arguments
from taskbridge.testing import Harness


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Harness]:
    with open_harness("celery-redis", tmp_path, "celery_jobs", {}) as harness:
        yield harness


def _shape(value: Any) -> Any:
    """Keys and value types, recursively: what kombu's consumer relies on."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def _stored(run: Harness) -> list[dict[str, Any]]:
    engine: Any = get_engine()
    key = str(engine.broker.transport_options.get("global_keyprefix", "")) + run.queue
    client = redis.Redis.from_url(engine.broker.url)
    try:
        return [json.loads(item) for item in reversed(client.lrange(key, 0, -1))]
    finally:
        client.close()


def test_a_rendered_batch_is_stored_like_kombus_own_message_and_runs(run: Harness) -> None:
    jobs.echo.enqueue(0)  # one message: kombu's producer
    assert jobs.echo.enqueue_many([(1,), (2,), (3,)]) == 3  # a batch: rendered into one pipeline
    kombu_made, *rendered = _stored(run)
    assert len(rendered) == 3
    for message in rendered:
        assert _shape(message) == _shape(kombu_made)
        assert message["headers"].keys() == kombu_made["headers"].keys()
        assert message["headers"]["task"] == kombu_made["headers"]["task"]
        for name in ("body_encoding", "delivery_mode", "priority", "reply_to", "delivery_info"):
            assert message["properties"][name] == kombu_made["properties"][name], name
        assert message["properties"]["correlation_id"] == message["headers"]["id"]
    tags = [m["properties"]["delivery_tag"] for m in [kombu_made, *rendered]]
    assert len(set(tags)) == 4
    assert all(str(uuid.UUID(tag)) == tag and uuid.UUID(tag).version == 4 for tag in tags), "shaped as kombu's"
    bodies = [json.loads(base64.b64decode(m["body"])) for m in rendered]
    assert [body[0][0]["args"] for body in bodies] == [[1], [2], [3]], "stored in publish order"
    run.start_workers()
    ran = run.wait_for(lambda: len(run.events("ran", "echo")) >= 4 and run.events("ran", "echo"), 60, "not all ran")
    assert sorted(e["n"] for e in ran) == [0, 1, 2, 3]


@pytest.mark.parametrize("eta", [None, 1_900_000_000.5])
def test_prepared_amqp_properties_read_back_as_py_amqps_own(eta: float | None) -> None:
    """A batch on RabbitMQ carries properties encoded once per kind of message: py-amqp reads them
    back exactly as the properties py-amqp itself writes for the same message."""
    from amqp import Message
    from amqp.serialization import decode_properties_basic
    from taskbridge_celery.amqp_messages import PERSISTENT, CeleryProperties
    from taskbridge_celery.wire import CONTENT_ENCODING, CONTENT_TYPE, message_headers

    from taskbridge import Envelope

    properties = CeleryProperties()
    for envelope in [
        Envelope(job="jobs.one", queue="q", args=[1]),
        Envelope(job="jobs.one", queue="q", args=[2]),  # the same kind: its shared part from the cache
        Envelope(job="jobs.two", queue="q", args=[], attempt=3),
    ]:
        task_id = envelope.id
        own = Message(
            b"",
            content_type=CONTENT_TYPE,
            content_encoding=CONTENT_ENCODING,
            application_headers=message_headers(envelope, task_id, eta),
            correlation_id=task_id,
            reply_to="",
            delivery_mode=PERSISTENT,
        )._serialize_properties()
        prepared = properties.encode(envelope, task_id, eta)
        assert decode_properties_basic(prepared, 0) == decode_properties_basic(own, 0)
        assert len(prepared) == len(own)


def _without_tags(runs: list[tuple[str, list[str]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    def untagged(text: str) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(text)
        del message["properties"]["delivery_tag"]
        return message

    return [(queue, [untagged(text) for text in texts]) for queue, texts in runs]


def test_a_batch_and_the_same_envelopes_one_by_one_are_stored_alike() -> None:
    batch = EnvelopeBatch("celery.echo", "q", enqueued_at=1_800_000_000.5, expires_at=None, not_before=None, headers={})
    for args in [(1,), ("zürich ✓ 100%",), ({"deep": [1, None]},)]:
        batch.add(args, {}, *json_arguments("celery.echo", args, {}))
    for eta in (None, 1_800_000_060.0):
        assert _without_tags(stored_messages(batch, eta)) == _without_tags(stored_messages(list(batch), eta))
    other = Envelope(job="celery.other", queue="r", args=[2], attempt=3)
    runs = stored_messages([batch[0], other, batch[1]], None)
    assert [(queue, len(texts)) for queue, texts in runs] == [("q", 1), ("r", 1), ("q", 1)], "in order, per queue"
    headers = json.loads(runs[1][1][0])["headers"]
    assert (headers["task"], headers["retries"], headers["id"]) == ("celery.other", 2, other.id)
