"""Is the server there? One bounded check of the broker and of the coordination store, and one line
saying what is wrong, where (password masked), why, and what to check.

Each check speaks the transport's own protocol with the client the installed extras bring
(redis-py; py-amqp or pika; boto3), never through an engine, so that it is quick and bounded by the
``connect_timeout`` setting whatever the engine's own retry policy is.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from . import tls
from .config import Settings, mask_url
from .errors import TaskbridgeError


class ServerUnavailable(TaskbridgeError):
    """The broker or the coordination store cannot be reached or refuses us."""


def check_broker(settings: Settings) -> None:
    """Raise :class:`ServerUnavailable` unless the broker answers within ``connect_timeout``."""
    url = settings.broker_url
    scheme = settings.broker_scheme
    check: Callable[[], None]
    if scheme == "memory":
        return
    if scheme in ("redis", "rediss"):
        check = lambda: _ping_redis(url, settings.connect_timeout)  # noqa: E731
    elif scheme in ("amqp", "amqps", "pyamqp"):
        check = lambda: _open_amqp(url, settings.connect_timeout)  # noqa: E731
    else:
        check = lambda: _list_sqs(settings)  # noqa: E731
    variable = "TASKBRIDGE_BROKER_URL"
    if scheme == "sqs":
        variable = "TASKBRIDGE_SQS_ENDPOINT_URL" if settings.sqs_endpoint_url else "the AWS credentials and region"
    _run(check, "broker", _where(settings), variable, scheme)


def check_coordination(settings: Settings) -> None:
    """Raise :class:`ServerUnavailable` unless the coordination store (if on Redis) answers."""
    url = settings.effective_coordination_url
    if urlsplit(url).scheme == "memory":
        return
    variable = "TASKBRIDGE_COORDINATION_URL" if settings.coordination_url else "TASKBRIDGE_BROKER_URL"
    check = lambda: _ping_redis(url, settings.connect_timeout)  # noqa: E731
    _run(check, "coordination store", mask_url(url), variable, "redis")


def _where(settings: Settings) -> str:
    if settings.broker_scheme == "sqs":
        return f"sqs:// ({settings.sqs_endpoint_url or 'AWS'}, region {settings.sqs_region})"
    return mask_url(settings.broker_url)


def _run(check: Callable[[], None], what: str, where: str, variable: str, scheme: str) -> None:
    try:
        check()
    except ServerUnavailable:
        raise
    except ImportError as exc:
        from .extras import MissingDependency, install_hint, transport_extra

        module = (exc.name or "").split(".")[0]
        extra = transport_extra(scheme)
        hint = f": {install_hint(extra)}" if extra else ""
        raise MissingDependency(f"the {what} at {where} needs {module or exc}, which is not installed{hint}") from None
    except Exception as exc:
        cause, advice = _explain(exc, variable)
        raise ServerUnavailable(f"cannot use the {what} at {where}: {cause}; {advice}") from None


def _explain(exc: BaseException, variable: str) -> tuple[str, str]:
    """The cause in a few words, and what to check."""
    text = " ".join(str(exc).split()).rstrip(".")
    if not text and exc.args:  # pika: the cause is only in the arguments
        text = " ".join(repr(arg) for arg in exc.args)
    name = type(exc).__name__
    text = text or name
    lowered = text.lower()
    if any(word in lowered for word in ("access_refused", "access refused", "auth", "password", "credential")) or (
        "Authentication" in name or "AccessRefused" in name or "InvalidClientTokenId" in text
    ):
        return f"login refused ({text[:200]})", f"check the user and password in {variable}"
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in lowered or "Timeout" in name:
        return "no answer (timed out)", f"check that the server runs and is reachable at {variable}"
    return f"{text[:200]}", f"check {variable} and that the server is running there"


def _ping_redis(url: str, timeout: float) -> None:
    import redis

    url, options = tls.split(url)
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry_on_timeout=False,
        **(options.redis_kwargs() if options else {}),
    )
    try:
        client.ping()
    finally:
        client.close()


def _open_amqp(url: str, timeout: float) -> None:
    url, options = tls.split(url)
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else "guest"
    password = unquote(parts.password) if parts.password else "guest"
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    host = parts.hostname or "localhost"
    port = parts.port or (5672 if options is None else 5671)
    try:
        import amqp
    except ImportError:
        amqp = None
    if amqp is not None:
        connection = amqp.Connection(
            host=f"{host}:{port}",
            userid=user,
            password=password,
            virtual_host=vhost,
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
        return
    import pika

    parameters = pika.ConnectionParameters(
        host=host,
        port=port,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        connection_attempts=1,
        socket_timeout=timeout,
        stack_timeout=timeout,
        blocked_connection_timeout=timeout,
    )
    if options is not None:
        parameters.ssl_options = pika.SSLOptions(options.context(), host)
    pika.BlockingConnection(parameters).close()


def _list_sqs(settings: Settings) -> None:
    import boto3
    from botocore.config import Config

    parts = urlsplit(settings.broker_url)
    options: dict[str, object] = {"region_name": settings.sqs_region}
    if settings.sqs_endpoint_url:
        options["endpoint_url"] = settings.sqs_endpoint_url
    if parts.username:
        options["aws_access_key_id"] = unquote(parts.username)
        options["aws_secret_access_key"] = unquote(parts.password or "")
    elif settings.sqs_endpoint_url and boto3.Session().get_credentials() is None:
        options["aws_access_key_id"] = options["aws_secret_access_key"] = "taskbridge"
    timeout = settings.connect_timeout
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    client = boto3.client("sqs", config=config, **options)
    client.list_queues(QueueNamePrefix=settings.namespace, MaxResults=1)
