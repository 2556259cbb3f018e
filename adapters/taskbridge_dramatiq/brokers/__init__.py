"""Builds the Dramatiq broker for the configured transport, and states what that transport holds."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import dramatiq

from taskbridge import tls
from taskbridge.config import Settings
from taskbridge.engine import TransportFacts
from taskbridge.transports import SQS_MAX_DELAY, SQS_MAX_MESSAGE_BYTES, Kind, parse

from ..settings import DramatiqSettings
from .common import UNKNOWN_JOB_ACTOR, RoutesUnknownActors, TaskbridgeBroker

__all__ = [
    "UNKNOWN_JOB_ACTOR",
    "RoutesUnknownActors",
    "TaskbridgeBroker",
    "build_broker",
    "consumer_timeout_ms",
    "pika_ssl_options",
    "pika_url",
    "redis_connection",
    "redis_heartbeat_timeout",
    "transport_facts",
    "transport_of",
]

_MIB = 1024 * 1024
# Dramatiq holds a natively delayed message unacknowledged in the worker until it is due: RabbitMQ's
# consumer_timeout (30 minutes by default) would close the channel of a longer hold, and SQS caps
# DelaySeconds at 900. On Redis the message waits in the worker's memory; an hour keeps that small.
_MAX_DELAY = {"redis": 3600.0, "amqp": 900.0, "sqs": SQS_MAX_DELAY}
# SQS: the envelope travels JSON-quoted inside Dramatiq's JSON message, base64-encoded (4/3), and
# the message may be at most 256 KiB; the exact size is checked again when it is sent.
_MAX_SIZE = {"redis": 16 * _MIB, "amqp": 16 * _MIB, "sqs": SQS_MAX_MESSAGE_BYTES * 3 // 4 - 4096}


def transport_of(settings: Settings) -> Kind:
    """``redis``, ``amqp`` or ``sqs`` for the broker URL; anything else is a configuration error."""
    return settings.transport.served_by("dramatiq")


def transport_facts(settings: Settings) -> TransportFacts:
    """What the configured transport holds natively under Dramatiq."""
    transport = transport_of(settings)
    return TransportFacts(
        max_native_delay=_MAX_DELAY[transport],
        max_message_size=_MAX_SIZE[transport],
        multi_process=True,
        native_hard_timeout=True,
        native_soft_timeout=False,
        delivers_finished_again=transport == "sqs",
        flags_lost_acks=transport == "amqp",
    )


def consumer_timeout_ms(transport: str, options: DramatiqSettings) -> int:
    """How long an idle consumer waits for a message. dramatiq-sqs turns it into whole seconds of SQS
    long polling, which returns as soon as a message arrives: below 1 s it would poll without waiting."""
    if transport == "sqs":
        return max(options.worker_timeout_ms, 1000)
    return options.worker_timeout_ms


def redis_heartbeat_timeout(settings: Settings, options: DramatiqSettings) -> float:
    """Seconds before a silent Redis worker's messages are delivered again."""
    if options.redis_heartbeat_timeout is not None:
        return options.redis_heartbeat_timeout
    return min(settings.visibility_timeout, 60.0)


def build_broker(
    settings: Settings, options: DramatiqSettings, *, worker: bool, middleware: list[dramatiq.Middleware]
) -> TaskbridgeBroker:
    """A fresh broker for this process. Dramatiq's default middleware is left out on purpose: the core
    owns retries, backoff, expiry and timeouts (AgeLimit, Retries and TimeLimit would fight it)."""
    transport = transport_of(settings)
    broker: Any
    if transport == "redis":
        from .redis import TaskbridgeRedisBroker

        broker = TaskbridgeRedisBroker(
            **redis_connection(settings.broker_url),
            namespace=settings.namespace,
            heartbeat_timeout=int(redis_heartbeat_timeout(settings, options) * 1000),
            middleware=middleware,
        )
    elif transport == "amqp":
        from .rabbitmq import TaskbridgeRabbitmqBroker

        url, tls_options = tls.split(settings.broker_url, "TASKBRIDGE_BROKER_URL")
        broker = TaskbridgeRabbitmqBroker(
            url=pika_url(url),
            confirm_delivery=worker or options.confirm_delivery,
            middleware=middleware,
        )
        if tls_options is not None:
            broker.parameters.ssl_options = pika_ssl_options(tls_options, settings.transport.host)
    else:
        from .sqs import MAX_BODY_BYTES, TaskbridgeSQSBroker

        broker = TaskbridgeSQSBroker(
            namespace=settings.namespace,
            middleware=middleware,
            visibility_timeout=max(1, min(int(settings.visibility_timeout), 12 * 3600)),
            max_message_size=MAX_BODY_BYTES,
            **_boto_options(settings),
        )
    return broker  # type: ignore[no-any-return]


def redis_connection(url: str) -> dict[str, Any]:
    """RedisBroker's client for ``url``, whose connects and replies time out (see
    :func:`.redis.redis_client`), with the TLS options for ``rediss://``."""
    from .redis import redis_client

    plain, options = tls.split(url, "TASKBRIDGE_BROKER_URL")
    return {"client": redis_client(plain, **(options.redis_kwargs() if options else {}))}


def pika_ssl_options(options: tls.TlsOptions, host: str | None) -> Any:
    """pika's SSL options from ours (pika itself reads TLS options only from an ``ssl_options``
    Python-literal URL parameter, and would refuse the ``ssl_*`` ones)."""
    import pika

    return pika.SSLOptions(options.context(), server_hostname=host)


def pika_url(url: str) -> str:
    """The broker URL as pika reads it: the path is the virtual host as Celery and kombu read it
    (``amqp://host//`` and ``amqp://host`` mean ``/``), quoted for pika."""
    parts = urlsplit(url)
    transport = parse(url)
    scheme = "amqps" if transport.tls else "amqp"
    return urlunsplit((scheme, parts.netloc, "/" + quote(transport.vhost, safe=""), parts.query, ""))


def _boto_options(settings: Settings) -> dict[str, Any]:
    """Endpoint, region and credentials for boto3: ``sqs://KEY:SECRET@`` wins over the environment;
    with a custom endpoint (moto, LocalStack) and no credentials at all, dummy ones are used."""
    from botocore.config import Config

    # Bounded: a send to an unreachable endpoint fails within seconds; a read waits out a long poll.
    timeouts = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
    return {"config": timeouts, **settings.transport.boto_options(aws_credentials_configured)}


def aws_credentials_configured() -> bool:
    """boto3 finds credentials of its own (environment, profile, instance role)."""
    import boto3

    return boto3.Session().get_credentials() is not None
