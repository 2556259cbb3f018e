"""How the Celery adapter turns settings into a broker: URLs, transport options and facts (no server)."""

from __future__ import annotations

import pytest
from taskbridge_celery.broker import SQS_MAX_BODY, broker_for
from taskbridge_celery.settings import CelerySettings

from taskbridge import load_settings
from taskbridge.errors import ConfigurationError
from taskbridge.transports import SQS_LOCAL_CREDENTIALS


def test_redis_delays_end_well_before_the_visibility_timeout(clean_env: None) -> None:
    broker = broker_for(load_settings(engine="celery", broker_url="redis://h:6379/0"), CelerySettings())
    assert broker.facts(CelerySettings()).max_native_delay == 3600 - 900
    short = broker_for(
        load_settings(engine="celery", broker_url="redis://h/0", visibility_timeout=10), CelerySettings()
    )
    assert short.facts(CelerySettings()).max_native_delay == 5
    assert short.transport_options["visibility_timeout"] == 10
    assert short.transport_options["unacked_restore_throttle"] == 1


def test_amqp_delays_end_before_rabbitmqs_consumer_timeout(clean_env: None) -> None:
    settings = load_settings(engine="celery", broker_url="amqp://guest:guest@h:5672//")
    assert broker_for(settings, CelerySettings()).facts(CelerySettings()).max_native_delay == 900
    custom = CelerySettings(amqp_consumer_timeout=600, delay_margin=100)
    assert broker_for(settings, custom).facts(custom).max_native_delay == 500


def test_sqs_endpoint_goes_into_the_url_with_dummy_credentials(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    settings = load_settings(
        engine="celery",
        broker_url="sqs://",
        sqs_endpoint_url="http://127.0.0.1:4566",
        sqs_region="eu-west-1",
        namespace="run42",
        visibility_timeout=30,
    )
    broker = broker_for(settings, CelerySettings())
    assert broker.url == f"sqs://{SQS_LOCAL_CREDENTIALS}:{SQS_LOCAL_CREDENTIALS}@127.0.0.1:4566"
    options = broker.transport_options
    assert (options["is_secure"], options["region"], options["queue_name_prefix"]) == (False, "eu-west-1", "run42-")
    assert options["visibility_timeout"] == 30
    facts = broker.facts(CelerySettings())
    assert facts.max_native_delay == 900
    assert facts.max_message_size < SQS_MAX_BODY * 3 // 4


def test_sqs_keeps_credentials_given_in_the_url(clean_env: None) -> None:
    settings = load_settings(
        engine="celery", broker_url="sqs://AKID:se%2Fcret@", sqs_endpoint_url="https://sqs.local:8443"
    )
    broker = broker_for(settings, CelerySettings())
    assert broker.url == "sqs://AKID:se%2Fcret@sqs.local:8443"
    assert broker.transport_options["is_secure"] is True


def test_a_bad_sqs_endpoint_is_refused_naming_the_setting(clean_env: None) -> None:
    settings = load_settings(engine="celery", broker_url="sqs://", sqs_endpoint_url="127.0.0.1:4566")
    with pytest.raises(ConfigurationError, match="TASKBRIDGE_SQS_ENDPOINT_URL"):
        broker_for(settings, CelerySettings())


def test_redis_and_sqs_workers_read_items_through_the_guarded_transports(clean_env: None) -> None:
    def transport(url: str, **settings: object) -> str | None:
        return broker_for(load_settings(engine="celery", broker_url=url, **settings), CelerySettings()).transport

    assert transport("redis://h:6379/0") == "taskbridge_celery.guarded_redis:RedisTransport"
    assert transport("sqs://", sqs_endpoint_url="http://127.0.0.1:4566") == "taskbridge_celery.guarded_sqs:SQSTransport"
    assert transport("amqp://guest:guest@h:5672//") is None, "RabbitMQ is guarded in the consumer"
    assert transport("rediss://h:6380/0") == "taskbridge_celery.guarded_redis:RedisTransport"


def test_rabbitmq_publishes_wait_for_the_brokers_confirm_unless_turned_off(clean_env: None) -> None:
    settings = load_settings(engine="celery", broker_url="amqp://guest:guest@h:5672//")
    assert broker_for(settings, CelerySettings()).transport_options["confirm_publish"] is True
    off = CelerySettings(amqp_confirm_publish=False)
    assert "confirm_publish" not in broker_for(settings, off).transport_options
