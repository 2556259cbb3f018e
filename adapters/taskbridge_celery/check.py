"""Is the broker there? One bounded connection with the client Celery's transport uses (redis-py,
py-amqp, boto3); taskbridge.preflight words what goes wrong."""

from __future__ import annotations

from taskbridge import tls
from taskbridge.preflight import ping_redis
from taskbridge.transports import Transport


def check_broker(transport: Transport, namespace: str, timeout: float) -> None:
    """Raise unless the broker of ``transport`` answers within ``timeout`` seconds."""
    if transport.kind == "redis":
        ping_redis(transport.url, timeout)
    elif transport.kind == "amqp":
        _open_amqp(transport, timeout)
    elif transport.kind == "sqs":
        _list_sqs(transport, namespace, timeout)


def _open_amqp(transport: Transport, timeout: float) -> None:
    import amqp

    _, options = tls.split(transport.url)
    host = transport.host or "localhost"
    port = transport.port or (5671 if options else 5672)
    connection = amqp.Connection(
        host=f"{host}:{port}",
        userid=transport.username or "guest",
        password=transport.password or "guest",
        virtual_host=transport.vhost,
        ssl=options.py_amqp_ssl(host) if options else False,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
    )
    try:
        connection.connect()
    except BaseException:
        connection.collect()
        raise
    connection.close()


def _list_sqs(transport: Transport, namespace: str, timeout: float) -> None:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    options = transport.boto_options(lambda: boto3.Session().get_credentials() is not None)
    boto3.client("sqs", config=config, **options).list_queues(QueueNamePrefix=namespace, MaxResults=1)
