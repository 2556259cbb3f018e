"""Per transport: the broker URL and transport options Celery gets, and what the transport holds.

Celery keeps a countdown/ETA message *in the worker*, unacknowledged, until it is due. Every
transport redelivers an unacknowledged message after some time: Redis after the visibility
timeout (kombu restores it to the queue, so a second worker runs it too), SQS after the queue's
VisibilityTimeout, RabbitMQ after ``consumer_timeout`` (it closes the channel and requeues every
unacknowledged delivery). A delay handed to Celery must therefore end, with the queueing and the
run time of the job after it, before that time: ``max_native_delay = hold_limit - margin``.
Longer delays hop through the core (the runner republishes the envelope until it is due).

SQS is the exception: the adapter publishes delays as SQS ``DelaySeconds`` (at most 900 s), so the
queue itself holds the message invisible and the worker only receives it when due.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from taskbridge import Settings, TransportFacts, tls
from taskbridge.errors import ConfigurationError
from taskbridge.layout import SQS_RETENTION_SECONDS, redis_celery_prefix
from taskbridge.transports import SQS_MAX_DELAY, SQS_MAX_MESSAGE_BYTES, Transport

from .settings import CelerySettings

SQS_MAX_BODY = SQS_MAX_MESSAGE_BYTES
_SQS_HEADROOM = 4 * 1024
"""Bytes of the SQS body taken by Celery headers and kombu's message fields around the envelope."""
_MAX_MARGIN = 900.0
REDIS_MAX_MESSAGE = 8 * 1024 * 1024
REDIS_TRANSPORT = "taskbridge_celery.guarded_redis:RedisTransport"
SQS_TRANSPORT = "taskbridge_celery.guarded_sqs:SQSTransport"
"""kombu's transports with a guarded read of every queue item (guarded_redis.py, guarded_sqs.py)."""
AMQP_MAX_MESSAGE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Broker:
    """The transport as Celery sees it."""

    scheme: str
    """``redis``, ``amqp`` or ``sqs``."""
    url: str
    transport_options: dict[str, Any] = field(default_factory=dict)
    hold_limit: float = float("inf")
    """Seconds an unacknowledged message may stay with a worker before the broker redelivers it."""
    max_message_size: int = REDIS_MAX_MESSAGE
    transport: str | None = None
    """kombu transport class (``module:Class``) in place of the one the URL's scheme names."""
    ssl: dict[str, Any] | None = None
    """TLS options as kombu's ``ssl`` connection argument (Celery's ``broker_use_ssl``), or None."""

    def facts(self, options: CelerySettings) -> TransportFacts:
        if self.scheme == "sqs":
            max_delay = SQS_MAX_DELAY
        else:
            margin = options.delay_margin
            if margin is None:
                margin = min(self.hold_limit / 2, _MAX_MARGIN)
            max_delay = max(0.0, self.hold_limit - margin)
        return TransportFacts(
            max_native_delay=max_delay,
            max_message_size=self.max_message_size,
            multi_process=True,
            native_hard_timeout=True,
            # The runner's SIGALRM timer raises JobTimeout in the prefork child's main thread at
            # the exact moment; Celery's soft_time_limit would raise its own exception, up to a
            # second late (billiard checks time limits once a second).
            native_soft_timeout=False,
            delivers_finished_again=self.scheme == "sqs",
            # kombu's Redis channel puts a worker's unacknowledged messages back, flagged as
            # redelivered, when its connection closes: a warm stop (or --reload) whose ack did not
            # go out before the close hands out a finished job again, as RabbitMQ does.
            flags_lost_acks=self.scheme in ("amqp", "redis"),
        )


def broker_for(settings: Settings, options: CelerySettings) -> Broker:
    """The Celery broker for ``settings.broker_url``."""
    kind = settings.transport.served_by("celery")
    if kind == "redis":
        return _redis(settings, options)
    if kind == "amqp":
        return _amqp(settings, options)
    return _sqs(settings, options)


def _redis(settings: Settings, options: CelerySettings) -> Broker:
    vt = settings.visibility_timeout
    url, tls_options = tls.split(settings.broker_url, "TASKBRIDGE_BROKER_URL")
    return Broker(
        scheme="redis",
        url=url,
        # kombu hands these to redis-py's SSLConnection; without them it would not verify the server.
        ssl=tls_options.redis_kwargs() if tls_options else None,
        transport_options={
            "visibility_timeout": vt,
            # kombu scans for messages whose worker died every interval x throttle seconds
            # (100 s by default); scan often enough that such a job comes back soon after vt.
            "unacked_restore_interval": max(1.0, min(10.0, vt / 4)),
            "unacked_restore_throttle": 1,
            # The lock one scanning worker holds; a connection cut mid-scan leaves it held until it
            # expires (kombu: 300 s), and no worker brings any message back meanwhile.
            "unacked_mutex_expire": max(5, min(300, int(vt))),
            "socket_connect_timeout": 5,
            # Every key (queue lists, the unacked hash and index, bindings, pidbox channels) under
            # "<namespace>:celery:", apart from Dramatiq's "<namespace>:<queue>" keys; "" shares
            # kombu's bare keys with Celery apps not migrated yet.
            "global_keyprefix": (
                redis_celery_prefix(settings.namespace)
                if options.redis_key_prefix is None
                else options.redis_key_prefix
            ),
        },
        hold_limit=vt,
        max_message_size=REDIS_MAX_MESSAGE,
        # rediss:// too: its TLS comes from ``ssl`` (broker_use_ssl), not from the scheme's name.
        transport=REDIS_TRANSPORT,
    )


def _amqp(settings: Settings, options: CelerySettings) -> Broker:
    transport_options: dict[str, Any] = {}
    if options.amqp_confirm_publish:
        transport_options["confirm_publish"] = True
    url, tls_options = tls.split(settings.broker_url, "TASKBRIDGE_BROKER_URL")
    return Broker(
        scheme="amqp",
        url=url,
        ssl=tls_options.py_amqp_ssl(settings.transport.host) if tls_options else None,
        transport_options=transport_options,
        hold_limit=options.amqp_consumer_timeout,
        max_message_size=AMQP_MAX_MESSAGE,
    )


def _sqs(settings: Settings, options: CelerySettings) -> Broker:
    url = settings.broker_url
    transport_options: dict[str, Any] = {
        "region": settings.sqs_region,
        "visibility_timeout": max(1, int(settings.visibility_timeout)),
        "queue_name_prefix": f"{settings.namespace}-",  # taskbridge.layout.sqs_queue_name
        "sqs-creation-attributes": {"MessageRetentionPeriod": str(SQS_RETENTION_SECONDS)},
        "wait_time_seconds": options.sqs_wait_time_seconds,
        "polling_interval": options.sqs_polling_interval,
        # Plain JSON bodies: base64 over kombu's own base64 body would leave 190 KiB of 256.
        "sqs_base64_encoding": False,
    }
    if settings.sqs_endpoint_url:
        url, secure = _sqs_url_for_endpoint(settings.transport, settings.sqs_endpoint_url)
        transport_options["is_secure"] = secure
    # kombu base64-encodes the Celery body inside its JSON message: 4 bytes for every 3.
    size = (SQS_MAX_BODY - _SQS_HEADROOM) * 3 // 4
    return Broker(
        scheme="sqs",
        url=url,
        transport_options=transport_options,
        hold_limit=float(transport_options["visibility_timeout"]),
        max_message_size=size,
        transport=SQS_TRANSPORT,
    )


def _sqs_url_for_endpoint(transport: Transport, endpoint: str) -> tuple[str, bool]:
    """kombu takes the SQS endpoint only from the broker URL's host (it ignores ``endpoint_url``)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"TASKBRIDGE_SQS_ENDPOINT_URL must look like http://127.0.0.1:4566, got {endpoint!r}")
    credentials = transport.aws_credentials(_aws_credentials_configured)
    user = credentials.get("aws_access_key_id")
    secret = credentials.get("aws_secret_access_key", "")
    auth = f"{quote(user, safe='')}:{quote(secret, safe='')}@" if user else ""
    port = f":{parts.port}" if parts.port else ""
    return f"sqs://{auth}{parts.hostname}{port}", parts.scheme == "https"


def _aws_credentials_configured() -> bool:
    import boto3

    return boto3.Session().get_credentials() is not None
