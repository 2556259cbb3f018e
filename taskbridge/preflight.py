"""Is the server there? One bounded check of the broker and of the coordination store, and one line
saying what is wrong, where (password masked), why, and what to check.

The coordination store (Redis) is pinged here with redis-py. The broker is checked by the engine
(its optional ``check(timeout)`` method, see :class:`taskbridge.engine.Engine`) with the client of
the transport it uses, so the core imports no transport library; whatever it raises is worded here.
Each check is quick and bounded by the ``connect_timeout`` setting whatever the engine's own retry
policy is.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import tls
from .config import Settings, mask_url
from .errors import TaskbridgeError
from .transports import kind_of

if TYPE_CHECKING:
    from .engine import Engine


LOGIN_REFUSED = "login refused"


class ServerUnavailable(TaskbridgeError):
    """The broker or the coordination store cannot be reached or refuses us.

    ``lasting`` is true when waiting would not help (the login was refused), false when the server
    may simply not be up yet (connection refused, no answer).
    """

    def __init__(self, message: str, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting


def check_broker(settings: Settings, engine: Engine | None = None) -> None:
    """Raise :class:`ServerUnavailable` unless the broker answers within ``connect_timeout``.

    ``engine`` (default: one built from ``settings``, closed afterwards) does the check; an engine
    without a ``check`` method is not checked.
    """
    transport = settings.transport
    if transport.kind == "memory":
        return
    variable = "TASKBRIDGE_BROKER_URL"
    if transport.kind == "sqs":
        variable = "TASKBRIDGE_SQS_ENDPOINT_URL" if transport.endpoint_url else "the AWS credentials and region"
    if engine is None:
        from .engine import load_engine_factory

        own = load_engine_factory(settings.engine)(settings)
        try:
            check_broker(settings, own)
        finally:
            own.close()
        return
    check: Callable[[float], None] | None = getattr(engine, "check", None)
    if check is not None:
        _run(lambda: check(settings.connect_timeout), "broker", transport.display, variable, transport.kind)


def check_coordination(settings: Settings) -> None:
    """Raise :class:`ServerUnavailable` unless the coordination store (if on Redis) answers."""
    url = settings.effective_coordination_url
    if kind_of(url) == "memory":
        return
    variable = "TASKBRIDGE_COORDINATION_URL" if settings.coordination_url else "TASKBRIDGE_BROKER_URL"
    _run(lambda: ping_redis(url, settings.connect_timeout), "coordination store", mask_url(url), variable, "redis")


def _run(check: Callable[[], None], what: str, where: str, variable: str, kind: str) -> None:
    try:
        check()
    except ServerUnavailable:
        raise
    except ImportError as exc:
        from .extras import MissingDependency, install_hint, transport_extra

        module = (exc.name or "").split(".")[0]
        extra = transport_extra(kind)
        hint = f": {install_hint(extra)}" if extra else ""
        raise MissingDependency(f"the {what} at {where} needs {module or exc}, which is not installed{hint}") from None
    except Exception as exc:
        cause, advice = _explain(exc, variable)
        lasting = cause.startswith(LOGIN_REFUSED)
        raise ServerUnavailable(f"cannot use the {what} at {where}: {cause}; {advice}", lasting=lasting) from None


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
        return f"{LOGIN_REFUSED} ({text[:200]})", f"check the user and password in {variable}"
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in lowered or "Timeout" in name:
        return "no answer (timed out)", f"check that the server runs and is reachable at {variable}"
    return f"{text[:200]}", f"check {variable} and that the server is running there"


def ping_redis(url: str, timeout: float) -> None:
    """PING Redis at ``url`` (TLS options included) once, waiting at most ``timeout`` seconds."""
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
