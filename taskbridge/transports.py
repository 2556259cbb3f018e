"""The broker URL, parsed once: which transport, where it is, and what it accepts.

The core and both engine adapters read the transport from :func:`parse` (or ``Settings.transport``)
instead of looking at the URL themselves. Nothing here imports a transport's client library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from .errors import ConfigurationError, JobDefinitionError
from .layout import sqs_queue_name

if TYPE_CHECKING:
    from .config import Settings

Kind = Literal["memory", "redis", "amqp", "sqs"]
"""The transport behind a URL scheme: ``rediss`` is ``redis``, ``amqps`` and ``pyamqp`` are ``amqp``."""

SCHEME_KINDS: Mapping[str, Kind] = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "sqs": "sqs",
}
BROKER_SCHEMES = ("memory", "redis", "rediss", "amqp", "amqps", "pyamqp", "sqs")
"""Schemes a broker URL may have (``unix://`` Redis sockets are for the coordination store only)."""
TLS_SCHEMES = frozenset({"rediss", "amqps"})

SQS_MAX_MESSAGE_BYTES = 256 * 1024
"""SQS's limit for one message body, and for all the bodies of one SendMessageBatch request."""
SQS_MAX_DELAY = 900.0
"""Longest ``DelaySeconds`` SQS accepts."""
SQS_LOCAL_CREDENTIALS = "taskbridge"
"""Access key and secret given to a custom SQS endpoint (moto, LocalStack) when no credentials are
configured at all: such endpoints accept any, but boto needs some."""
SQS_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

T = TypeVar("T")


@dataclass(frozen=True)
class BatchRules:
    """How many messages, and how many bytes of them, one batched send may carry."""

    max_count: int
    max_bytes: int

    def split(self, items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
        """``items`` in order, in batches within both limits (an item alone is never split further)."""
        batch: list[T] = []
        total = 0
        for item in items:
            length = size(item)
            if batch and (len(batch) == self.max_count or total + length > self.max_bytes):
                yield batch
                batch, total = [], 0
            batch.append(item)
            total += length
        if batch:
            yield batch


SQS_BATCH = BatchRules(max_count=10, max_bytes=SQS_MAX_MESSAGE_BYTES)
"""SendMessageBatch: at most 10 messages and 256 KiB per request."""


@dataclass(frozen=True)
class Transport:
    """A broker (or coordination store) URL as a typed value. Build it with :func:`parse`."""

    url: str = field(repr=False)
    """The URL as configured (credentials and TLS parameters included): for clients, never for display."""
    scheme: str
    kind: Kind
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    path: str = ""
    """The URL path unquoted, without its leading ``/``: the Redis database, the AMQP virtual host."""
    options: Mapping[str, str] = field(default_factory=dict)
    """The URL's query parameters (``memory://?autostart=0``, the ``ssl_*`` TLS parameters)."""
    endpoint_url: str | None = None
    """SQS: the endpoint (moto, LocalStack, a VPC endpoint); None for AWS itself."""
    region: str | None = None
    """SQS: the AWS region."""

    @property
    def tls(self) -> bool:
        """The connection is encrypted (``rediss://``, ``amqps://``)."""
        return self.scheme in TLS_SCHEMES

    @property
    def display(self) -> str:
        """Where the transport is, for messages and logs: the password masked, SQS's endpoint and region."""
        if self.kind == "sqs":
            return f"sqs:// ({self.endpoint_url or 'AWS'}, region {self.region})"
        return mask_url(self.url)

    @property
    def vhost(self) -> str:
        """AMQP: the virtual host as Celery and kombu read it (``amqp://host//`` and ``amqp://host`` mean ``/``)."""
        return self.path or "/"

    @property
    def max_message_bytes(self) -> int | None:
        """The largest message body the transport itself accepts (None: larger than any engine allows)."""
        return SQS_MAX_MESSAGE_BYTES if self.kind == "sqs" else None

    @property
    def max_delay(self) -> float | None:
        """The longest delay the transport itself holds a message (None: the transport holds none natively)."""
        return SQS_MAX_DELAY if self.kind == "sqs" else None

    @property
    def batch(self) -> BatchRules | None:
        """The limits of one batched send, where the transport has them."""
        return SQS_BATCH if self.kind == "sqs" else None

    def served_by(self, engine: str) -> Kind:
        """The kind of a transport that ``engine`` (running jobs in other processes) can use as its broker."""
        if self.kind == "memory":
            raise ConfigurationError(
                f"the {engine} engine cannot use broker {self.scheme}:// (TASKBRIDGE_BROKER_URL); "
                "use redis://, amqp:// or sqs://"
            )
        return self.kind

    def queue_name_problem(self, queue: str, namespace: str, dead_letter_suffix: str) -> str | None:
        """Why this transport cannot hold ``queue`` (and its dead-letter queue), or None."""
        if self.kind != "sqs":
            return None
        for name in (queue, queue + dead_letter_suffix):
            full = sqs_queue_name(namespace, name)
            if not SQS_QUEUE_NAME.match(full):
                return (
                    f"queue {queue!r} cannot be an SQS queue: its name there, {full!r}, may hold only letters, "
                    "digits, '-' and '_', at most 80 characters (TASKBRIDGE_NAMESPACE and the queue name together)"
                )
        return None

    def aws_credentials(self, configured: Callable[[], bool]) -> dict[str, str]:
        """SQS: boto's ``aws_access_key_id`` and ``aws_secret_access_key`` when taskbridge must give them:
        those of ``sqs://KEY:SECRET@`` first; else, for a custom endpoint when ``configured()`` says boto
        finds none of its own, :data:`SQS_LOCAL_CREDENTIALS`; else none (boto's own lookup applies)."""
        if self.username:
            return {"aws_access_key_id": self.username, "aws_secret_access_key": self.password or ""}
        if self.endpoint_url and not configured():
            return {"aws_access_key_id": SQS_LOCAL_CREDENTIALS, "aws_secret_access_key": SQS_LOCAL_CREDENTIALS}
        return {}

    def boto_options(self, credentials_configured: Callable[[], bool]) -> dict[str, str]:
        """SQS: the region, endpoint and credentials to build a boto3 client with (see :meth:`aws_credentials`)."""
        options = {"region_name": self.region or "us-east-1"}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        return {**options, **self.aws_credentials(credentials_configured)}


def parse(url: str, *, sqs_endpoint_url: str | None = None, sqs_region: str = "us-east-1") -> Transport:
    """The transport of ``url``; a scheme taskbridge knows no transport for raises ValueError."""
    parts = urlsplit(url)
    kind = SCHEME_KINDS.get(parts.scheme)
    if kind is None:
        raise ValueError(f"unsupported scheme {parts.scheme!r}; use one of {', '.join(BROKER_SCHEMES)}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port of {mask_url(url)!r} is not a number") from None
    return Transport(
        url=url,
        scheme=parts.scheme,
        kind=kind,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=unquote(parts.path[1:]) if len(parts.path) > 1 else "",
        options=dict(parse_qsl(parts.query)),
        endpoint_url=sqs_endpoint_url if kind == "sqs" else None,
        region=sqs_region if kind == "sqs" else None,
    )


def kind_of(url: str) -> Kind | None:
    """The transport kind of ``url``'s scheme, None for a scheme taskbridge does not know."""
    return SCHEME_KINDS.get(urlsplit(url).scheme)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def queue_name_problem(queue: str, settings: Settings) -> str | None:
    """Why the configured transport cannot hold ``queue`` (and its dead-letter queue), or None."""
    return settings.transport.queue_name_problem(queue, settings.namespace, settings.dead_letter_suffix)


def check_declared_queue(job: str, queue: str | None, settings: Settings | None) -> None:
    """At ``@job``: raise :class:`JobDefinitionError` naming the job, the queue and the rule when the
    configured transport cannot hold the job's queue (``queue="my.queue"`` on SQS). Without valid
    settings there is nothing to check against yet; the queue is checked again at enqueue."""
    if settings is None:
        return
    problem = queue_name_problem(queue or settings.default_queue, settings)
    if problem:
        raise JobDefinitionError(f"job {job!r}: {problem}")
