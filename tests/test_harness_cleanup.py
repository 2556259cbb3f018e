"""A contract case leaves no queue behind on the user's broker: the harness deletes its queue, its
dead letters and the engine's companions of both (Dramatiq's ``.DQ`` and ``.XQ``) when it closes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pika
import pika.exceptions
import pytest
from support import unavailable

from taskbridge.engine import delete_queue
from taskbridge.layout import sqs_queue_name
from taskbridge.testing import KNOWN, Harness, jobs, unavailable_reason
from taskbridge.testing.harness import DEFAULT_SQS_ENDPOINT


def _rabbitmq_queues(url: str, names: list[str]) -> list[str]:
    """Which of ``names`` exist on RabbitMQ (a passive declare of a missing one closes its channel)."""
    parameters = pika.URLParameters(url.rstrip("/") + "/%2F")
    existing = []
    with contextlib.closing(pika.BlockingConnection(parameters)) as connection:
        for name in names:
            channel = connection.channel()
            try:
                channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code == 404, exc
            else:
                existing.append(name)
                channel.close()
    return existing


def _sqs_queues(namespace: str) -> list[str]:
    client = boto3.client(
        "sqs",
        endpoint_url=os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    urls = client.list_queues(QueueNamePrefix=f"{namespace}-").get("QueueUrls", [])
    return sorted(url.rsplit("/", 1)[-1] for url in urls)


@pytest.mark.parametrize("name", ["celery-amqp", "dramatiq-amqp", "celery-sqs", "dramatiq-sqs"])
def test_a_closed_harness_leaves_no_queue_on_the_broker(name: str, tmp_path: Path) -> None:
    combination = KNOWN[name]
    reason = unavailable_reason(combination)
    if reason:
        unavailable(f"{combination}: {reason}")
    sqs = urlsplit(combination.broker_url).scheme == "sqs"
    harness = Harness(combination, tmp_path)
    namespace = harness.env["TASKBRIDGE_NAMESPACE"]
    try:
        jobs.echo.enqueue("waiting")
        jobs.echo.options(queue=harness.dead_queue).enqueue("a dead letter")
        jobs.echo.options(countdown=30).enqueue("delayed")
        queues = [harness.queue, harness.dead_queue]
        if combination.engine == "dramatiq":
            queues += [f"{queue}.{suffix}" for queue in queues for suffix in ("DQ", "XQ")]
        if sqs:
            expected = sorted(sqs_queue_name(namespace, queue) for queue in (harness.queue, harness.dead_queue))
            assert _sqs_queues(namespace) == expected
        else:
            assert _rabbitmq_queues(combination.broker_url, queues) == queues
    finally:
        harness.close()
    if sqs:
        assert _sqs_queues(namespace) == []
    else:
        assert _rabbitmq_queues(combination.broker_url, queues) == []


@pytest.mark.parametrize("name", ["celery-amqp", "dramatiq-amqp", "celery-sqs", "dramatiq-sqs", "celery-redis"])
def test_a_job_enqueued_after_its_queue_was_deleted_is_not_lost(name: str, tmp_path: Path) -> None:
    combination = KNOWN[name]
    reason = unavailable_reason(combination)
    if reason:
        unavailable(f"{combination}: {reason}")
    harness = Harness(combination, tmp_path)
    try:
        jobs.echo.enqueue("before")
        jobs.echo.enqueue_many([("before 1",), ("before 2",)])
        delete_queue(harness.engine, harness.queue)
        jobs.echo.enqueue_many([("batch 1",), ("batch 2",)])
        jobs.echo.enqueue("after")
        harness.wait_for(
            lambda: harness.depth(harness.queue) == 3, 30, "the jobs enqueued after the delete are not queued"
        )
        harness.start_workers()
        harness.wait_for(
            lambda: len(harness.events("ran", "echo")) >= 3, 60, "the jobs enqueued after the delete never ran"
        )
        assert sorted(event["args"][0] for event in harness.events("ran", "echo")) == ["after", "batch 1", "batch 2"]
    finally:
        harness.close()
