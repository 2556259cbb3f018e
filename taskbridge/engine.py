"""The Engine port every adapter implements, and the registry of engines by name."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .config import get_settings
from .errors import ConfigurationError, UnknownEngineError
from .extras import install_hint

if TYPE_CHECKING:
    from .config import Settings
    from .envelope import Envelope
    from .outcomes import Outcome
    from .spec import JobSpec

ENTRY_POINT_GROUP = "taskbridge.engines"


class MessageRunner(Protocol):
    """What an engine hands every message to (the core's :class:`~taskbridge.runner.Runner`).

    Both methods carry out the outcome (republish or dead-letter) before they return: a write that
    fails is retried in place, with back-off, until it is stored (:mod:`taskbridge.carrying`), so
    the calling thread may hold the message a long time but the job never runs twice for it. If
    they raise (no outcome could be decided, so the job did not run; or, inside
    :func:`taskbridge.carrying.without_holding`, the one write failed), the message must not be
    acknowledged, so that it is delivered again.
    """

    def run(self, raw: str | bytes | dict[str, Any], queue: str | None = None, *, redelivered: bool = False) -> Outcome:
        """Decode, apply the policies, run the job; ``queue`` is where the message came from.
        ``raw`` is the envelope's JSON, or the JSON object an engine already parsed.
        ``redelivered``: the transport flags the message as handed out before (RabbitMQ's
        redelivered flag, a Redis message restored from a lost worker); a copy of a delivery whose
        run finished is then acknowledged without running (:mod:`taskbridge.duplicates`)."""

    def run_item(
        self,
        body: bytes | str,
        queue: str,
        *,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
        redelivered: bool = False,
    ) -> Outcome:
        """An item as the transport holds it (any engine's wrapper, or any bytes at all) read from
        ``queue``: run the envelope inside it, or dead-letter the item to ``queue``'s dead letters.
        On AMQP pass the message's ``content_type`` and ``headers`` (a legacy Celery message's task
        name is in its headers); ``redelivered`` as for :meth:`run`."""

    def dead_letter(self, raw: bytes | str, reason: str, queue: str | None) -> Outcome:
        """Dead-letter an item the engine cannot hand to :meth:`run`, without running anything."""

    def fail_killed(
        self, raw: str | bytes, reason: str, *, timed_out: bool = False, queue: str | None = None
    ) -> Outcome:
        """The engine killed the job (hard timeout, lost child): retry or dead-letter it."""


class DeclaredRunner:
    """The runner an engine was given by :meth:`Engine.declare`, the only way an engine gets one;
    the engine hands it every message."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._runner: MessageRunner | None = None

    def keep(self, runner: MessageRunner) -> None:
        """Remember the runner :meth:`Engine.declare` was given."""
        self._runner = runner

    def require(self) -> MessageRunner:
        """The declared runner; raises :class:`~taskbridge.errors.ConfigurationError` before any job
        was declared (a worker without one could neither run nor dead-letter a message)."""
        if self._runner is None:
            raise ConfigurationError(
                f"the {self._engine} engine runs messages only after its jobs were declared: name the "
                "modules that declare them (taskbridge worker myapp.jobs)"
            )
        return self._runner


@dataclass(frozen=True)
class TransportFacts:
    """What an engine and its transport can do natively; the core makes up for the rest."""

    max_native_delay: float
    """Longest delay (seconds) the transport holds safely; longer delays hop through the core."""
    max_message_size: int
    """Largest envelope (bytes) the transport accepts."""
    multi_process: bool
    """Jobs run in several OS processes, so locks and rate limits need a shared coordination store."""
    native_hard_timeout: bool = False
    """The engine can kill a job that overruns ``hard_timeout``."""
    native_soft_timeout: bool = False
    """The engine raises :class:`JobTimeout` in the job itself; the runner then sets no timer of its own."""
    delivers_finished_again: bool = False
    """The transport may hand out a message again although its run finished and it was acknowledged
    in time (SQS: at least once), so the runner checks every message against the finished ones
    (:mod:`taskbridge.duplicates`). Without it only a message the engine flags as redelivered
    (its acknowledgement was lost) is checked."""
    flags_lost_acks: bool = False
    """The transport hands out again soon, flagged as redelivered, a message whose acknowledgement was
    lost (RabbitMQ, and kombu's Redis channel under Celery: as the connection that held it closes).
    The runner then keeps a short-lived finished mark of every message it ran (gathered and written
    in batches, no round trip of its own) and a redelivered message whose run finished is not run
    again."""


class Taken(Protocol):
    """One item taken out of a queue by :meth:`Engine.take`, not run, until it is acknowledged or released.

    An item neither acknowledged nor released (the taking process died) becomes deliverable again
    by itself: RabbitMQ and SQS redeliver it, Redis puts it back on the next ``take`` in that namespace.
    """

    body: bytes
    """The item exactly as the transport holds it, the engine's wrapper included."""
    queue: str
    """The taskbridge queue it was taken from (``<queue>-dead`` for taskbridge's own dead letters)."""
    redelivered: bool
    """It may have been taken before by a taker that stopped without settling it, so a copy may
    already be stored elsewhere (RabbitMQ's redelivered flag, an SQS receive count above one, a
    Redis holding given up by a killed taker)."""

    def ack(self) -> None:
        """Remove it for good; call only after wherever it goes has stored it."""

    def release(self) -> None:
        """Put it back untouched, deliverable again."""


@runtime_checkable
class Engine(Protocol):
    """An engine adapter: only what the engine must do natively."""

    name: str
    facts: TransportFacts

    def declare(self, spec: JobSpec, runner: MessageRunner) -> None:
        """Make the engine able to run ``spec``'s messages by handing each body to ``runner.run``."""

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        """Send envelopes to their queues, delivered after ``delay`` <= ``facts.max_native_delay``."""

    def work(self, queues: Sequence[str], concurrency: int) -> None:
        """Run a worker on ``queues`` in the foreground until it is stopped."""

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (approximate where the transport only knows that)."""

    def purge(self, queue: str) -> int:
        """Drop every waiting message of ``queue``; returns how many were dropped where known."""

    def take(self, queue: str, limit: int, *, dead_letters: bool = False) -> list[Taken]:
        """Up to ``limit`` waiting items of ``queue`` taken out without running them, natively delayed
        ones included (Dramatiq's ``.DQ``, Celery ETA messages); with ``dead_letters``, the queue's
        dead letters instead (taskbridge's ``<queue>-dead`` and the engine's own, e.g. Dramatiq's
        ``.XQ``). An empty list means nothing more is waiting. Each item stays out of the queue,
        invisible to workers, until it is acknowledged or released."""

    def close(self) -> None:
        """Release connections."""

    # Optional (looked up with getattr, so an engine without it still fits the port):
    #
    # def check(self, timeout: float) -> None:
    #     """Connect to the broker once with the transport's own client, waiting at most ``timeout``
    #     seconds whatever the engine's retry policy, and raise if it cannot be reached or refuses.
    #
    #     taskbridge.preflight calls it before a command or a worker uses the broker and turns what it
    #     raises into one ServerUnavailable line (where, the cause, what to check); an ImportError
    #     becomes the pip command of the transport's extra. Without it the broker is not checked.
    #     """
    #
    # def holdings(self, queue: str) -> Mapping[str, int]:
    #     """Where on the broker ``queue``'s waiting messages are kept (a Redis key, an SQS or
    #     RabbitMQ queue: the name as the broker knows it) and how many each place holds.
    #
    #     At start a worker compares the places of the other registered engines with its own
    #     engine's, on the same broker URL: a place only the other engine uses that holds messages
    #     is a stranded backlog, and the worker logs the ``taskbridge move`` command for it
    #     (taskbridge.stranded). The checks must be cheap: one count per place, no message read.
    #     """
    #
    # def delete_queue(self, queue: str) -> None:
    #     """Remove ``queue`` from the broker, messages and all, with whatever the engine keeps beside
    #     it (Dramatiq's ``.DQ`` and ``.XQ``). For clean-up (the contract harness calls it when a
    #     case ends), not for a queue workers consume. Without it, :func:`delete_queue` purges.
    #     """
    #
    # def start_publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> Callable[[], None]:
    #     """:meth:`publish` that returns once the envelopes are written, before the broker answered;
    #     the function returned waits for the answer and raises what ``publish`` would. The caller
    #     publishes nothing else through the engine before calling it, and may build its next batch
    #     meanwhile (``enqueue_many`` does). Without it, :func:`start_publish` publishes and waits.
    #     """
    #
    # def legacy_holdings(self, queue: str) -> Mapping[str, int]:
    #     """Queues outside the layout whose messages a worker on ``queue`` runs too (the Dramatiq
    #     engine on SQS: plain dramatiq-sqs producers' ``<namespace>_<queue>``), by their name on the
    #     broker, with how many messages each holds; empty when there is none.
    #
    #     ``taskbridge status`` shows each as a legacy row of ``queue``. An engine with it also takes
    #     their messages with ``take(queue, limit, legacy=True)``, which ``taskbridge move --legacy``
    #     uses.
    #     """


def settle(items: Sequence[Taken], *, ack: bool) -> None:
    """Acknowledge (or release) taken items; items whose ``taker`` attribute offers ``ack_many`` /
    ``release_many`` are settled in one call per taker (one round trip where the transport allows)."""
    groups: dict[int, tuple[Any, list[Taken]]] = {}
    for item in items:
        taker = getattr(item, "taker", None)
        many = getattr(taker, "ack_many" if ack else "release_many", None)
        if many is None:
            if ack:
                item.ack()
            else:
                item.release()
        else:
            groups.setdefault(id(taker), (many, []))[1].append(item)
    for many, grouped in groups.values():
        many(grouped)


def delete_queue(engine: Engine, queue: str) -> None:
    """``engine``'s optional ``delete_queue(queue)`` (see :class:`Engine`); a purge without it."""
    delete: Callable[[str], None] | None = getattr(engine, "delete_queue", None)
    if delete is None:
        engine.purge(queue)
    else:
        delete(queue)


def start_publish(engine: Engine, envelopes: Sequence[Envelope], delay: float = 0) -> Callable[[], None]:
    """``engine``'s optional ``start_publish`` (see :class:`Engine`); without it, the envelopes are
    published here and the function returned has nothing left to wait for."""
    start: Callable[[Sequence[Envelope], float], Callable[[], None]] | None = getattr(engine, "start_publish", None)
    if start is not None:
        return start(envelopes, delay)
    engine.publish(envelopes, delay)
    return already_stored


def already_stored() -> None:
    """What ``start_publish`` returns when the publish already waited for the broker: nothing is
    left to wait for."""


def legacy_holdings(engine: Engine, queue: str) -> Mapping[str, int]:
    """``engine``'s optional ``legacy_holdings(queue)`` (see :class:`Engine`); empty without it."""
    holdings: Callable[[str], Mapping[str, int]] | None = getattr(engine, "legacy_holdings", None)
    return {} if holdings is None else holdings(queue)


EngineFactory = Callable[["Settings"], Engine]


def available_engines() -> dict[str, str]:
    """Registered engine names and where each comes from."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_engine_factory(name: str) -> EngineFactory:
    """The engine class registered under ``name`` in the ``taskbridge.engines`` entry-point group."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                factory: EngineFactory = ep.load()
            except ImportError as exc:
                raise UnknownEngineError(
                    f"engine {name!r} is registered but cannot be imported ({exc}); "
                    f"install it with: {install_hint(name)}"
                ) from exc
            return factory
    known = ", ".join(sorted(available_engines())) or "none"
    raise UnknownEngineError(f"no engine named {name!r} (TASKBRIDGE_ENGINE); registered engines: {known}")


_lock = threading.RLock()
_engine: Engine | None = None


def get_engine() -> Engine:
    """The process-wide engine, built from settings on first use."""
    global _engine
    with _lock:
        if _engine is None:
            settings = get_settings()
            _engine = load_engine_factory(settings.engine)(settings)
        return _engine


def set_engine(engine: Engine | None) -> None:
    """Replace the process-wide engine (``None``: close it and build anew from settings on next use)."""
    global _engine
    with _lock:
        if _engine is not None and _engine is not engine:
            _engine.close()
        _engine = engine
