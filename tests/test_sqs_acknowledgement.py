"""SQS refusing to delete a finished message (its receipt handle no longer valid, here because the
queue was purged meanwhile): each engine's worker says so in its log, since the message will run
again after the visibility timeout, and keeps consuming."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from kombu import Connection
from taskbridge_celery.guarded_sqs import SQSTransport
from taskbridge_dramatiq.brokers import build_broker
from taskbridge_dramatiq.settings import DramatiqSettings

from taskbridge.config import load_settings
from taskbridge.testing import unavailable_reason
from taskbridge.testing.harness import DEFAULT_SQS_ENDPOINT, Combination

ENDPOINT = os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT)


@pytest.fixture
def sqs() -> Iterator[Any]:
    reason = unavailable_reason(Combination("dramatiq", "sqs://"))
    if reason:
        pytest.skip(reason)
    yield boto3.client(
        "sqs",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _purge(sqs: Any, url: str) -> None:
    """Drop the queue's messages, the one received included, so its receipt handle is unknown."""
    sqs.purge_queue(QueueUrl=url)


def test_dramatiq_logs_a_refused_delete_and_keeps_consuming(sqs: Any, caplog: pytest.LogCaptureFixture) -> None:
    namespace = f"tback{uuid.uuid4().hex[:8]}"
    settings = load_settings(engine="dramatiq", broker_url="sqs://", namespace=namespace, sqs_endpoint_url=ENDPOINT)
    broker: Any = build_broker(settings, DramatiqSettings(), worker=True, middleware=[])
    queue = "acks"
    broker.declare_queue(queue)
    consumer = broker.consume(queue, prefetch=1, timeout=1000)
    url = broker._queue_url(queue)
    try:
        for body in ("first", "second"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
            message = _receive(consumer)
            if body == "first":
                _purge(sqs, url)
            with caplog.at_level(logging.WARNING, logger="taskbridge.dramatiq"):
                consumer.ack(message)  # the refused one must not stop the consumer
            assert consumer.message_refc == 0, "the consumer's prefetch slot was not given back"
        [warning] = [r.getMessage() for r in caplog.records if "refused to delete" in r.getMessage()]
        assert "ReceiptHandleIsInvalid" in warning and "run again" in warning
    finally:
        consumer.close()
        sqs.delete_queue(QueueUrl=url)
        broker.close()


def test_celery_logs_a_refused_delete(sqs: Any, caplog: pytest.LogCaptureFixture) -> None:
    name = f"tback{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    options = {"predefined_queues": {name: {"url": url}}, "region": "us-east-1", "is_secure": False}
    endpoint = ENDPOINT.split("://", 1)[1]
    try:
        with Connection(f"sqs://testing:testing@{endpoint}", transport=SQSTransport, transport_options=options) as conn:
            queue = conn.SimpleQueue(name)
            queue.put({"n": 1}, serializer="json")
            message = queue.get(timeout=30)
            _purge(sqs, url)
            with caplog.at_level(logging.WARNING, logger="taskbridge.celery"):
                message.ack()
            queue.close()
        [warning] = [r.getMessage() for r in caplog.records if "refused to delete" in r.getMessage()]
        assert "ReceiptHandleIsInvalid" in warning and "run again" in warning
    finally:
        sqs.delete_queue(QueueUrl=url)


def _receive(consumer: Any) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("nothing was delivered")
