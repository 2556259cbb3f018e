"""DramatiqEngine: the Engine port over Dramatiq's Redis and RabbitMQ brokers and dramatiq-sqs."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dramatiq

from taskbridge.config import Settings, get_settings
from taskbridge.engine import DeclaredRunner, MessageRunner, Taken, TransportFacts, already_stored
from taskbridge.envelope import Envelope, EnvelopeBatch
from taskbridge.errors import ConfigurationError
from taskbridge.extras import require
from taskbridge.layout import dead_letter_queue
from taskbridge.spec import JobSpec

from .actors import declare_actors, to_message
from .brokers import TaskbridgeBroker, build_broker, pika_url, transport_facts, transport_of
from .brokers.common import taskbridge_queue
from .take import Take, open_take, own_dead_letters, queue_names, take_names

if TYPE_CHECKING:
    from taskbridge.outcomes import Outcome

    from .brokers.guard import CarriedItem

log = logging.getLogger("taskbridge.dramatiq")

_TRANSPORT_MODULES = {
    "redis": {"redis": "redis"},
    "amqp": {"pika": "rabbitmq"},
    "sqs": {"boto3": "sqs", "dramatiq_sqs": "sqs"},
}
"""Per transport, the packages its Dramatiq broker needs (module -> extra)."""


class DramatiqEngine:
    """Runs taskbridge jobs on Dramatiq: one actor per job, a real Dramatiq worker per process.

    The broker is this engine's own instance (Dramatiq's global broker is never set), built on first
    use. Dramatiq's Retries, AgeLimit and TimeLimit middleware are not installed: the core runner
    owns retries, backoff, expiry and the soft timeout; ``hard_timeout`` recycles the worker process.
    """

    name = "dramatiq"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.options = self.settings.dramatiq
        self.transport = transport_of(self.settings)
        require(_TRANSPORT_MODULES[self.transport], f"the dramatiq engine on {self.transport}://")
        self.facts: TransportFacts = transport_facts(self.settings)
        self._specs: dict[str, JobSpec] = {}
        self._declared = DeclaredRunner(self.name)
        self._broker: TaskbridgeBroker | None = None
        self._lock = threading.Lock()
        self._taker: Take | None = None

    @property
    def broker(self) -> TaskbridgeBroker:
        """The Dramatiq broker of this process (in a worker process: the one its Worker consumes from)."""
        with self._lock:
            if self._broker is None:
                self._broker = build_broker(self.settings, self.options, worker=False, middleware=[])
            return self._broker

    def declare(self, spec: JobSpec, runner: MessageRunner) -> None:
        """Remember the job; its actor is declared on the broker of each worker process."""
        self._specs[spec.name] = spec
        self._declared.keep(runner)

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        """Enqueue the envelopes (one pipeline / batch request where the broker allows) after ``delay``."""
        if not envelopes:
            return
        delay_ms = math.ceil(delay * 1000) if delay > 0 else None
        if isinstance(envelopes, EnvelopeBatch) and len(envelopes) > 1:
            self.broker.publish_batch(envelopes, delay_ms)
            return
        self.broker.publish([to_message(envelope) for envelope in envelopes], delay_ms)

    def start_publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> Callable[[], None]:
        """:meth:`publish` without waiting for the broker where it can (a batch on Redis); the function
        returned waits."""
        start = getattr(self.broker, "start_publish_batch", None)
        if start is None or not isinstance(envelopes, EnvelopeBatch) or len(envelopes) < 2:
            self.publish(envelopes, delay)
            return already_stored
        return start(envelopes, math.ceil(delay * 1000) if delay > 0 else None)  # type: ignore[no-any-return]

    def work(self, queues: Sequence[str], concurrency: int) -> None:
        """Run worker processes on ``queues`` in the foreground until SIGTERM or Ctrl-C.

        ``worker_processes`` x ``worker_threads`` jobs run at once; when only ``concurrency`` is
        given, one process runs that many threads.
        """
        from .process import WorkerProcess
        from .supervisor import Supervisor

        if not queues:
            raise ConfigurationError("the dramatiq worker needs at least one queue to consume (--queues)")
        self._declared.require()
        processes = self.settings.worker_processes or 1
        threads = self.settings.worker_threads or max(1, math.ceil(concurrency / processes))
        log.info(
            "dramatiq engine: %d process(es) x %d thread(s) on %s (%s)%s",
            processes,
            threads,
            ",".join(queues),
            self.transport,
            ", reloading on changes" if self.settings.worker_reload else "",
        )
        if self.transport == "amqp":
            settling: Any = self.broker
            settling.settle(queues, [dead_letter_queue(queue, self.settings) for queue in queues])
        self.close()  # a forked worker process must not share this process's connections
        supervisor = Supervisor(
            lambda index: WorkerProcess(self, queues, threads).run(),
            processes,
            reload=self.settings.worker_reload,
            respawn_delay=self.options.respawn_delay,
        )
        supervisor.run()

    def check(self, timeout: float) -> None:
        """Connect to the broker once, waiting at most ``timeout`` seconds; raise if it cannot be used."""
        from .check import check_broker

        check_broker(self.settings.transport, self.settings.namespace, timeout)

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue``, natively delayed ones included (approximate on SQS); for
        ``<queue>-dead``, Dramatiq's own dead letters of ``<queue>`` (``.XQ``) too."""
        count = self.broker.queue_depth(queue)
        if self._is_dead_letters(queue):
            count += own_dead_letters(self.broker, self.transport, queue[: -len(self.settings.dead_letter_suffix)])
        return count

    def holdings(self, queue: str) -> dict[str, int]:
        """Where ``queue``'s waiting messages are kept on the broker, and how many each place holds
        (the optional Engine port method the worker's stranded-backlog check uses)."""
        return self.broker.holdings(queue)

    def purge(self, queue: str) -> int:
        """Drop every waiting message of ``queue`` (and its Dramatiq delay queue)."""
        count = self.broker.purge_queue(queue)
        if self._is_dead_letters(queue):
            base = queue[: -len(self.settings.dead_letter_suffix)]
            count += own_dead_letters(self.broker, self.transport, base, purge=True)
        return count

    def delete_queue(self, queue: str) -> None:
        """Remove ``queue`` and Dramatiq's delay and dead-letter companions from the broker, messages
        and all (the optional Engine port method the contract harness cleans up with)."""
        self.broker.delete_queue(queue)

    def _is_dead_letters(self, queue: str) -> bool:
        """``<queue>-dead``: its count and purge include Dramatiq's own dead letters of ``<queue>`` (``.XQ``)."""
        suffix = self.settings.dead_letter_suffix
        return queue.endswith(suffix) and len(queue) > len(suffix)

    def take(self, queue: str, limit: int, *, dead_letters: bool = False, legacy: bool = False) -> list[Taken]:
        """Up to ``limit`` waiting messages of ``queue`` and its ``.DQ``, or its dead letters
        (``<queue>-dead`` and Dramatiq's ``.XQ``); with ``legacy``, those plain dramatiq-sqs producers
        left in their queue for ``queue`` (see :meth:`legacy_holdings`; none when it does not exist)."""
        broker: Any = self.broker
        if self._taker is None:
            self._taker = open_take(broker, self.transport, pika_url(self.settings.broker_url))
        if legacy:
            own = self._legacy_queue(queue)
            return [] if own is None else self._taker.take([(own, queue)], limit)
        if not dead_letters:
            broker.reap(queue)  # messages of dead workers back to the queue first
        names = queue_names(queue, dead_letter_queue(queue, self.settings), dead_letters=dead_letters)
        return self._taker.take(take_names(names), limit)

    def legacy_holdings(self, queue: str) -> dict[str, int]:
        """The queue outside the layout whose messages a worker on ``queue`` runs too, by its name on
        the broker, with how many messages it holds: on SQS, the queue plain dramatiq-sqs producers
        send ``queue``'s messages to (``<namespace>_<queue>``, the namespace being
        ``TASKBRIDGE_DRAMATIQ_SQS_LEGACY_NAMESPACE``) when it exists; nothing on other transports.
        ``taskbridge status`` shows it, and ``taskbridge move --legacy`` moves its messages."""
        own = self._legacy_queue(queue)
        if own is None:
            return {}
        broker: Any = self.broker
        return {broker.sqs_name(own): broker.queue_depth(own)}

    def _legacy_queue(self, queue: str) -> str | None:
        """The Dramatiq queue reading the legacy queue of ``queue``, declared on this process's broker;
        None when there is none."""
        if self.transport != "sqs":
            return None
        sqs: Any = self.broker
        declared: dict[str, str] = sqs.declare_legacy_queues([queue], self._legacy_namespace)
        return next(iter(declared), None)

    @property
    def _legacy_namespace(self) -> str:
        namespace = self.options.sqs_legacy_namespace
        return self.settings.namespace if namespace is None else namespace

    def close(self) -> None:
        """Close this process's broker connections; the next use opens new ones."""
        if self._taker is not None:
            self._taker.close()
            self._taker = None
        with self._lock:
            broker, self._broker = self._broker, None
        if broker is not None:
            closing: Any = broker
            closing.close()

    # The worker-process side, used by WorkerProcess.

    def start_worker_broker(
        self, middleware: dramatiq.Middleware, handle: Callable[..., None], queues: Sequence[str]
    ) -> TaskbridgeBroker:
        """Build this process's worker broker (publishes confirmed) with an actor for every declared job."""
        broker = build_broker(self.settings, self.options, worker=True, middleware=[middleware])
        declare_actors(
            broker,
            self._specs.values(),
            handle,
            default_queue=self.settings.default_queue,
            fallback_queue=queues[0],
        )
        for queue in queues:
            declaring: Any = broker
            declaring.declare_queue(queue)
        with self._lock:
            self._broker = broker
        return broker

    def legacy_queues(self, broker: TaskbridgeBroker, queues: Sequence[str]) -> list[str]:
        """The Dramatiq queues a worker on ``queues`` consumes beside them: on SQS, those reading the
        queues plain dramatiq-sqs producers write to (``<namespace>_<queue>``) that exist, each logged once."""
        if self.transport != "sqs":
            return []
        sqs: Any = broker
        declared: dict[str, str] = sqs.declare_legacy_queues(queues, self._legacy_namespace)
        for own, name in declared.items():
            log.warning(
                "SQS queue %r, where plain dramatiq-sqs producers send queue %r's messages, exists: this worker "
                "runs its messages too. Delete it once no such producer is left and it is empty.",
                name,
                taskbridge_queue(own),
            )
        return list(declared)

    def job_aliases(self) -> frozenset[str]:
        """The old names (``@job(aliases=...)``) of the declared jobs."""
        return frozenset(alias for spec in self._specs.values() for alias in spec.aliases)

    def hard_timeout_of(self, actor_name: str) -> float | None:
        """The ``hard_timeout`` of the job an actor runs, if it has one."""
        spec = self._specs.get(actor_name)
        return spec.hard_timeout if spec is not None else None

    @property
    def runner(self) -> MessageRunner:
        """The runner given to :meth:`declare`, which handles this engine's messages."""
        return self._declared.require()

    def run_message(
        self, raw: str, queue: str | None, item: CarriedItem | None = None, *, redelivered: bool = False
    ) -> Outcome:
        """Hand one message body to the runner given to :meth:`declare`; for a
        stand-in message (``item``: an item that was not a Dramatiq message), the item as read.
        ``redelivered``: the transport flags the message as handed out before."""
        if item is not None and queue is not None:
            return self.runner.run_item(
                item.body, queue, content_type=item.content_type, headers=item.headers, redelivered=redelivered
            )
        return self.runner.run(raw, queue, redelivered=redelivered)
