"""Contract support for the Dramatiq engine: writes raw items straight into a queue, as another tool
would, and makes items shaped like Dramatiq's own messages but broken (see ``taskbridge.testing``)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

import pika

from taskbridge.envelope import peek_job_name
from taskbridge.testing.harness import RawItem

from .engine import DramatiqEngine

_MISSING = object()
# The characters an SQS message body may hold; anything else is sent base64-encoded, as tools that
# put binary data on SQS do.
_SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def put_raw(engine: DramatiqEngine, queue: str, item: RawItem) -> None:
    """Write ``item`` into ``queue`` the way the transport stores Dramatiq's messages, past Dramatiq."""
    broker: Any = engine.broker
    if engine.transport == "redis":
        # The layout RedisBroker's enqueue script writes: id -> item in "<ns>:<queue>.msgs", id in "<ns>:<queue>".
        redis_id = str(uuid.uuid4())
        pipe = broker.client.pipeline(transaction=True)
        pipe.hset(f"{broker.namespace}:{queue}.msgs", redis_id, item.body)
        pipe.rpush(f"{broker.namespace}:{queue}", redis_id)
        pipe.execute()
    elif engine.transport == "amqp":
        broker.declare_queue(queue, ensure=True)
        properties = pika.BasicProperties(delivery_mode=2, content_type=item.content_type, headers=item.headers or None)
        broker.channel.basic_publish(exchange="", routing_key=queue, body=item.body, properties=properties)
    else:
        client = broker.sqs.meta.client
        client.send_message(QueueUrl=broker._queue_url(queue), MessageBody=sqs_text(item.body))


def engine_items(engine: DramatiqEngine, queue: str, envelope_text: str) -> list[RawItem]:
    """Dramatiq messages carrying ``envelope_text`` with a field missing, null or of the wrong type,
    and a well-formed one whose envelope is bad; base64-encoded on SQS, as dramatiq-sqs writes them."""
    job = peek_job_name(envelope_text) or "taskbridge.unknown"

    def message(**changes: Any) -> bytes:
        fields: dict[str, Any] = {
            "queue_name": queue,
            "actor_name": job,
            "args": [envelope_text],
            "kwargs": {},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
        fields.update(changes)
        text = json.dumps({k: v for k, v in fields.items() if v is not _MISSING}).encode()
        return base64.b64encode(text) if engine.transport == "sqs" else text

    return [
        RawItem("dramatiq: options null", message(options=None)),
        RawItem("dramatiq: no message_id", message(message_id=_MISSING)),
        RawItem("dramatiq: args null", message(args=None)),
        RawItem("dramatiq: kwargs a list", message(kwargs=[])),
        RawItem("dramatiq: actor_name a number", message(actor_name=7)),
        RawItem("dramatiq: two arguments", message(args=[envelope_text, 1])),
        RawItem("dramatiq: envelope is bad", message(args=[json.dumps({"id": "x", "job": job, "args": "no"})])),
    ]


def sqs_text(body: bytes) -> str:
    """``body`` as an SQS message can hold it: the text itself, or base64 when it is not valid SQS text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii")
    return text if _SQS_TEXT.fullmatch(text) else base64.b64encode(body).decode("ascii")
