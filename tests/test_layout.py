"""The shared queue layout matches what the engines' own libraries declare and name."""

from __future__ import annotations

import pytest

from taskbridge.layout import amqp_queue_arguments, sqs_queue_name


@pytest.mark.parametrize("queue", ["emails", "emails-dead", "a.b_c"])
def test_rabbitmq_queue_arguments_are_those_plain_dramatiq_declares(queue: str) -> None:
    rabbitmq = pytest.importorskip("dramatiq.brokers.rabbitmq")
    broker = rabbitmq.RabbitmqBroker(url="amqp://127.0.0.1:5672", middleware=[])
    assert amqp_queue_arguments(queue) == broker._build_queue_arguments(queue)


@pytest.mark.parametrize("queue", ["emails", "emails-dead", "b_c-v2"])
def test_sqs_queue_names_are_those_kombu_gives_with_the_namespace_prefix(queue: str) -> None:
    sqs = pytest.importorskip("kombu.transport.SQS")
    assert sqs_queue_name("ns_app", queue) == f"ns_app-{queue}".translate(sqs.CHARS_REPLACE_TABLE)
