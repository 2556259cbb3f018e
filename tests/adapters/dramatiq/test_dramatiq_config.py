"""The Dramatiq adapter's translation of settings, envelopes and message bodies (no server needed)."""

from __future__ import annotations

import json

import pytest
from taskbridge_dramatiq.actors import raw_body, to_message
from taskbridge_dramatiq.brokers import pika_url, transport_facts

from taskbridge import Envelope
from taskbridge.config import load_settings
from taskbridge.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        ("amqp://127.0.0.1", "amqp://127.0.0.1/%2F"),
        ("amqp://u:p@host/orders", "amqp://u:p@host/orders"),
        ("pyamqp://u:p@host:5672/%2F?heartbeat=5", "amqp://u:p@host:5672/%2F?heartbeat=5"),
    ],
)
def test_amqp_urls_name_the_virtual_host_as_celery_does(url: str, expected: str) -> None:
    assert pika_url(url) == expected


@pytest.mark.parametrize(
    ("url", "max_delay"),
    [("redis://127.0.0.1:6379/0", 3600.0), ("amqp://127.0.0.1//", 900.0), ("sqs://", 900.0)],
)
def test_each_transport_states_what_it_holds_natively(url: str, max_delay: float) -> None:
    facts = transport_facts(load_settings(engine="dramatiq", broker_url=url))
    assert facts.max_native_delay == max_delay
    assert facts.multi_process and facts.native_hard_timeout and not facts.native_soft_timeout


def test_an_envelope_at_the_sqs_limit_still_fits_sqs_after_json_and_base64() -> None:
    facts = transport_facts(load_settings(engine="dramatiq", broker_url="sqs://"))
    envelope = Envelope(job="app.job", queue="emails", args=["x" * (facts.max_message_size - 400)])
    assert len(envelope.encode()) <= facts.max_message_size
    assert 4 * -(-len(to_message(envelope).encode()) // 3) <= 256 * 1024  # base64 size


def test_the_memory_broker_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        transport_facts(load_settings(engine="memory", broker_url="memory://"))


def test_a_message_carries_the_envelope_text_as_its_only_argument() -> None:
    envelope = Envelope(job="app.send", queue="emails", args=[1, "zürich"], kwargs={"a": None})
    message = to_message(envelope)
    assert (message.actor_name, message.queue_name, message.message_id) == ("app.send", "emails", envelope.id)
    assert raw_body(message.args, message.kwargs) == envelope.encode()


def test_a_body_that_is_not_one_envelope_text_is_passed_on_for_the_runner_to_reject() -> None:
    assert json.loads(raw_body((1, 2), {"k": 3})) == {"args": [1, 2], "kwargs": {"k": 3}}
    assert json.loads(raw_body(({"id": "x"},), {})) == {"id": "x"}
