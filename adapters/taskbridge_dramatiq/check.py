"""Is the broker there? One bounded connection with the client Dramatiq's broker uses (redis-py,
pika, boto3); taskbridge.preflight words what goes wrong."""

from __future__ import annotations

import logging

from taskbridge import tls
from taskbridge.preflight import ping_redis
from taskbridge.transports import Transport

from .brokers import aws_credentials_configured


def check_broker(transport: Transport, namespace: str, timeout: float) -> None:
    """Raise unless the broker of ``transport`` answers within ``timeout`` seconds."""
    if transport.kind == "redis":
        ping_redis(transport.url, timeout)
    elif transport.kind == "amqp":
        _open_pika(transport, timeout)
    elif transport.kind == "sqs":
        _list_sqs(transport, namespace, timeout)


def _open_pika(transport: Transport, timeout: float) -> None:
    import pika

    _, options = tls.split(transport.url)
    host = transport.host or "localhost"
    parameters = pika.ConnectionParameters(
        host=host,
        port=transport.port or (5671 if options else 5672),
        virtual_host=transport.vhost,
        credentials=pika.PlainCredentials(transport.username or "guest", transport.password or "guest"),
        connection_attempts=1,
        socket_timeout=timeout,
        stack_timeout=timeout,
        blocked_connection_timeout=timeout,
    )
    if options is not None:
        parameters.ssl_options = pika.SSLOptions(options.context(), host)
    # pika logs every failed step of its connection workflow at ERROR; the caller words the one failure.
    quiet = logging.getLogger("pika")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        pika.BlockingConnection(parameters).close()
    finally:
        quiet.setLevel(level)


def _list_sqs(transport: Transport, namespace: str, timeout: float) -> None:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    options = transport.boto_options(aws_credentials_configured)
    boto3.client("sqs", config=config, **options).list_queues(QueueNamePrefix=namespace, MaxResults=1)
