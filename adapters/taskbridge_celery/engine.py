"""CeleryEngine: the taskbridge Engine port over Celery, on Redis, RabbitMQ and SQS."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from taskbridge import Envelope, JobSpec, Settings, TransportFacts, get_settings
from taskbridge.engine import DeclaredRunner, MessageRunner, Taken, already_stored
from taskbridge.envelope import EnvelopeBatch
from taskbridge.errors import EnqueueError, PublishError
from taskbridge.extras import require
from taskbridge.layout import dead_letter_queue, sqs_queue_name

from .app import build_app, consume
from .app_engines import attach
from .broker import broker_for
from .connection import ProcessConnection
from .legacy import register_aliases
from .publisher import Publisher
from .queues import BrokerQueues
from .reload import SourceWatcher, start_again
from .settings import CelerySettings
from .take import Take, open_take
from .tasks import register

if TYPE_CHECKING:
    from .sqs import SqsQueues

_TRANSPORT_MODULES = {"redis": {"redis": "redis"}, "amqp": {}, "sqs": {"boto3": "sqs"}}
"""Per transport, the packages it needs beyond Celery (module -> extra); py-amqp comes with kombu."""

log = logging.getLogger("taskbridge.celery")


def _described(envelopes: Sequence[Envelope]) -> str:
    queues = [envelopes.queue] if isinstance(envelopes, EnvelopeBatch) else sorted({e.queue for e in envelopes})
    return f"{len(envelopes)} message(s) to {', '.join(queues)}"


class CeleryEngine:
    """Runs taskbridge jobs on a Celery worker (prefork pool).

    Each job is a Celery task named after the job whose only argument is the envelope; the core
    runner applies every policy. Delays longer than ``facts.max_native_delay`` hop through the core.
    """

    name = "celery"

    def __init__(self, settings: Settings | None = None, options: CelerySettings | None = None) -> None:
        self.settings = settings or get_settings()
        self.options = options or self.settings.celery
        self.broker = broker_for(self.settings, self.options)
        require(_TRANSPORT_MODULES[self.broker.scheme], f"the celery engine on {self.broker.scheme}://")
        self.facts: TransportFacts = self.broker.facts(self.options)
        if self.options.task_events and self.broker.scheme == "sqs":
            log.warning("TASKBRIDGE_CELERY_TASK_EVENTS is ignored on sqs://: Celery sends events on Redis or RabbitMQ")
        self.task_events = self.options.task_events and self.broker.scheme != "sqs"
        self.app = build_app(self.settings, self.broker, task_events=self.task_events)
        attach(self.app, self)  # how the worker's request and consumer find the runner
        self._connection = ProcessConnection(self.app)
        if self.broker.scheme == "sqs":
            from .sqs import SqsQueues  # kombu's SQS transport and botocore: only for sqs://

            sqs = SqsQueues(self._connection)
            self._publish = sqs.publish
            self._publisher: Publisher | None = None
            self._queues: SqsQueues | BrokerQueues = sqs
        else:
            amqp = self.broker.scheme == "amqp"
            confirmed = amqp and self.options.amqp_confirm_publish
            self._publisher = Publisher(
                self._connection,
                declare_queues=amqp,
                transactions=confirmed,
                redis_batches=self.broker.scheme == "redis",
            )
            self._publish = self._publisher.publish
            self._queues = BrokerQueues(self._connection, scheme=self.broker.scheme)
        self._declared = DeclaredRunner(self.name)
        self._taker: Take | None = None

    def declare(self, spec: JobSpec, runner: MessageRunner) -> None:
        """Register ``spec`` as a Celery task whose body hands the envelope to ``runner``."""
        self._declared.keep(runner)
        if spec.name not in spec.aliases:  # else the alias task below runs the job's own name too
            register(self.app, spec, runner)
        register_aliases(self.app, spec, runner)
        longest = spec.hard_timeout or spec.resolved_timeout(self.settings.default_timeout)
        if self.broker.scheme in ("redis", "sqs") and longest and longest >= self.broker.hold_limit:
            log.warning(
                "job %s may run %gs, but %s delivers an unacknowledged message again after %gs "
                "(TASKBRIDGE_VISIBILITY_TIMEOUT): a run that long would also start on another worker",
                spec.name,
                longest,
                self.broker.scheme,
                self.broker.hold_limit,
            )

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        """Send envelopes over this process's producer connection, in batches.

        Raises :class:`~taskbridge.errors.PublishError` (the transport's exception chained) when the
        broker did not store them; on RabbitMQ stored means confirmed by the broker."""
        with self._stored_or_raise(envelopes):
            self._publish(envelopes, delay)

    def start_publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> Callable[[], None]:
        """:meth:`publish` that returns once a batch for Redis is written; the function returned waits
        until Redis stored it (elsewhere the publish waited already)."""
        if self._publisher is None:
            self.publish(envelopes, delay)
            return already_stored
        what = _described(envelopes)
        with self._stored_or_raise(what):
            written = self._publisher.start(envelopes, delay)

        def stored() -> None:
            with self._stored_or_raise(what):
                written()

        return stored

    @contextlib.contextmanager
    def _stored_or_raise(self, what: str | Sequence[Envelope]) -> Iterator[None]:
        """Raise :class:`PublishError` for what the block fails to store (``what`` described lazily)."""
        try:
            yield
        except (EnqueueError, ValueError):
            raise
        except Exception as exc:
            described = what if isinstance(what, str) else _described(what)
            raise PublishError(
                f"{described} not stored: the {self.broker.scheme} broker failed ({type(exc).__name__}: {exc}); "
                "publish them again once it is reachable"
            ) from exc

    def work(self, queues: Sequence[str], concurrency: int) -> None:
        """Run a Celery worker (prefork pool) on ``queues`` in the foreground until it is stopped; with
        ``worker_reload``, a changed ``*.py`` file under the current directory restarts it."""
        self._declared.require()
        names = list(queues) or [self.settings.default_queue]
        watcher = SourceWatcher() if self.settings.worker_reload else None
        consume(self.app, names)
        if self.broker.scheme == "amqp":
            # A retry or dead letter must be stored before its message is acknowledged: the
            # worker's own publishes are confirmed whatever producers chose.
            self.app.conf.broker_transport_options = {**self.broker.transport_options, "confirm_publish": True}
            if isinstance(self._queues, BrokerQueues):
                self._queues.settle(names, [dead_letter_queue(name, self.settings) for name in names])
            self.close()
        worker = self.app.Worker(
            hostname=self.options.hostname or f"taskbridge-{os.getpid()}@{socket.gethostname()}",
            queues=names,
            concurrency=concurrency,
            pool="prefork",
            loglevel=self.options.loglevel,
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=not self.task_events,  # Flower shows a worker online by its heartbeats
            optimization="fair",
            quiet=True,
        )
        if watcher is not None:
            watcher.start()
        try:
            worker.start()
        finally:
            if watcher is not None:
                watcher.stop()
        if worker.exitcode:
            raise SystemExit(worker.exitcode)
        if watcher is not None and watcher.changed:
            start_again()

    def check(self, timeout: float) -> None:
        """Connect to the broker once, waiting at most ``timeout`` seconds; raise if it cannot be used."""
        from .check import check_broker

        check_broker(self.settings.transport, self.settings.namespace, timeout)

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue``, delayed ones included (SQS: approximate)."""
        return self._queues.depth(queue)

    def holdings(self, queue: str) -> dict[str, int]:
        """Where ``queue``'s waiting messages are kept on the broker (the Redis key, SQS or RabbitMQ
        queue), and how many (the optional Engine port method the stranded-backlog check uses)."""
        if self.broker.scheme == "redis":
            name = str(self.broker.transport_options.get("global_keyprefix", "")) + queue
        elif self.broker.scheme == "sqs":
            name = sqs_queue_name(self.settings.namespace, queue)
        else:
            name = queue
        return {name: self.depth(queue)}

    def purge(self, queue: str) -> int:
        """Drop the waiting messages of ``queue``; returns how many there were."""
        return self._queues.purge(queue)

    def delete_queue(self, queue: str) -> None:
        """Remove ``queue`` from the broker, messages and all (the optional Engine port method the
        contract harness cleans up with); a later enqueue declares it again."""
        self._queues.delete(queue)
        if self._publisher is not None:
            self._publisher.forget(queue)

    def take(self, queue: str, limit: int, *, dead_letters: bool = False) -> list[Taken]:
        """Up to ``limit`` waiting messages of ``queue`` (ETA ones included), or of its dead letters."""
        if self._taker is None:
            self._taker = open_take(self.broker, self._connection, self.settings.namespace)
        name = dead_letter_queue(queue, self.settings) if dead_letters else queue
        return self._taker.take([(name, name)], limit)

    def close(self) -> None:
        """Release this process's broker connections."""
        if self._taker is not None:
            self._taker.close()
            self._taker = None
        self._connection.close()

    @property
    def runner(self) -> MessageRunner:
        """The runner :meth:`declare` was given; the worker's consumer and requests hand it messages."""
        return self._declared.require()
