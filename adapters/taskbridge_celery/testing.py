"""Test support for the contract's wire cases: raw items written straight into a Celery engine's
queues (as another tool would, past kombu's producer), and items shaped like kombu's and Celery's
own messages but broken (see :func:`taskbridge.testing.harness.wire_support`)."""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from typing import Any

import amqp
from kombu import Connection

from taskbridge.testing.harness import RawItem

from .app import queue as kombu_queue
from .engine import CeleryEngine

_PICKLE = "application/x-python-serialize"
_SQS_TEXT = frozenset(range(0x20, 0xD800)) | {0x9, 0xA, 0xD}


def put_raw(engine: CeleryEngine, queue: str, item: RawItem) -> None:
    """Write ``item.body`` into ``queue`` as the broker holds items: a Redis list element (through
    kombu's client, so key prefixes follow the engine's layout), an AMQP message with the item's
    content type and headers, or an SQS message body (bytes SQS cannot hold go as base64 text, as a
    tool would have to send them)."""
    with engine.app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        scheme = engine.broker.scheme
        if scheme == "redis":
            channel.client.lpush(channel._q_for_pri(queue, 0), item.body)
        elif scheme == "amqp":
            _put_amqp(connection, queue, item)
        elif scheme == "sqs":
            url = channel._new_queue(queue)
            client = channel.sqs(queue=channel.canonical_queue_name(queue))
            client.send_message(QueueUrl=url, MessageBody=_sqs_text(item.body))
        else:
            raise NotImplementedError(f"no raw writer for {scheme}://")


def _put_amqp(connection: Connection, queue: str, item: RawItem) -> None:
    channel: Any = connection.default_channel
    kombu_queue(queue)(channel).declare()
    properties: dict[str, Any] = {"delivery_mode": 2}
    if item.content_type is not None:
        properties["content_type"] = item.content_type
    if item.headers:
        properties["application_headers"] = item.headers
    channel.basic_publish(amqp.Message(item.body, **properties), exchange="", routing_key=queue)


def _sqs_text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii")
    if text and all(ord(ch) in _SQS_TEXT or ord(ch) >= 0xE000 for ch in text):
        return text
    return base64.b64encode(body).decode("ascii")


def engine_items(engine: CeleryEngine, queue: str, envelope_text: str) -> list[RawItem]:
    """Celery- and kombu-shaped items that cannot run, each ending as a dead letter: ``envelope_text``
    is a valid envelope of a declared job, which the broken wrappers around it must not run."""
    envelope = json.loads(envelope_text)
    job = envelope["job"]
    bad_envelope = {**envelope, "args": "not a list"}
    unknown_job = {**envelope, "job": "taskbridge.testing.jobs.no_such_job"}
    if engine.broker.scheme == "amqp":
        return [
            RawItem("no task header, envelope of an unknown job", _celery_body(unknown_job), "application/json"),
            RawItem("task header null", _json([None, {}, {}]), "application/json", {"task": None, "id": None}),
            RawItem("pickle content type", pickle.dumps([[envelope], {}, {}]), _PICKLE, _task(job)),
            RawItem("Celery body with null args", _json([None, {}, None]), "application/json", _task(job)),
            RawItem("Celery body not JSON", b"[[{", "application/json", _task(job)),
            RawItem("no content type, body not JSON", b"\x00\x01", None, _task(job)),
            RawItem("valid Celery message, bad envelope", _celery_body(bad_envelope), "application/json", _task(job)),
        ]
    b64 = _b64(_celery_body(envelope))
    properties = {"body_encoding": "base64", "delivery_tag": uuid.uuid4().hex, "delivery_info": {}, "priority": 0}
    kombu = {"content-type": "application/json", "content-encoding": "utf-8", "headers": _task(job)}
    return [
        RawItem("kombu JSON without properties", _json({**kombu, "body": b64})),
        RawItem("kombu properties null", _json({**kombu, "body": b64, "properties": None})),
        RawItem("kombu body not base64", _json({**kombu, "body": "%%% not base64", "properties": properties})),
        RawItem(
            "kombu headers a string, envelope of an unknown job",
            _json({**kombu, "headers": "x", "body": _b64(_celery_body(unknown_job)), "properties": properties}),
        ),
        RawItem(
            "kombu pickle",
            _json(
                {
                    **kombu,
                    "content-type": _PICKLE,
                    "content-encoding": "binary",
                    "body": base64.b64encode(pickle.dumps([[envelope], {}, {}])).decode(),
                    "properties": properties,
                }
            ),
        ),
        RawItem(
            "Celery body null args", _json({**kombu, "body": _b64(_json([None, {}, {}])), "properties": properties})
        ),
        RawItem(
            "kombu message without task header, envelope of an unknown job",
            _json({**kombu, "headers": {}, "body": _b64(_celery_body(unknown_job)), "properties": properties}),
        ),
        RawItem(
            "valid Celery message, bad envelope",
            _json({**kombu, "body": _b64(_celery_body(bad_envelope)), "properties": properties}),
        ),
    ]


def _task(job: str) -> dict[str, Any]:
    return {"task": job, "id": uuid.uuid4().hex, "lang": "py"}


def _celery_body(envelope: dict[str, Any]) -> bytes:
    return _json([[envelope], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
