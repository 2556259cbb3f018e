"""Dramatiq's RedisBroker with guarded consumers, pipelined batches, depth, purge and on-demand
dead-worker recovery."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import redis
from dramatiq import Message, get_encoder
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name, xq_name

from taskbridge.engine import already_stored
from taskbridge.envelope import EnvelopeBatch
from taskbridge.errors import PublishError
from taskbridge.redis_inflight import Command, InFlight, pieces

from ..outage import wait_before_reconnecting
from .common import RoutesUnknownActors, message_bodies
from .redis_consumer import ACK, FETCH, RECOVER, Acks, GuardedRedisConsumer, HeldIds

_CONNECT_TIMEOUT = 5.0
_SOCKET_TIMEOUT = 30.0
"""No command of the broker blocks on the server, so a reply slower than this means a dead link."""


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client whose connects and replies time out, so a publish to an unreachable server fails
    within a bounded time instead of hanging; ``options`` go to redis-py (e.g. TLS)."""
    return redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT, **options)


@contextmanager
def _stored_or_raise(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise PublishError(f"Redis did not store {what}: {exc}") from exc


class TaskbridgeRedisBroker(RoutesUnknownActors, RedisBroker):
    """RedisBroker whose batches go out in one pipeline and whose worker can force queue maintenance.

    Dramatiq moves the messages of a worker that stopped heartbeating back to their queue only during
    "maintenance", which runs on a random 0.1% of commands; :meth:`reap` runs it on demand so a
    killed worker's jobs come back about ``heartbeat_timeout`` after the crash.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._forced = threading.local()
        self._held: dict[str, HeldIds] = {}
        self._acks: dict[str, Acks] = {}
        self._held_lock = threading.Lock()
        self.consumer_scripts = (self.client.register_script(FETCH), self.client.register_script(RECOVER))
        self._ack_script = self.client.register_script(ACK)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> GuardedRedisConsumer:
        wait_before_reconnecting()
        if queue_name.endswith(".DQ"):
            # A delay-queue consumer (re)starts with nothing in memory: Dramatiq drops or hands back
            # the delayed messages of the one it replaces, so every id in its acks set is stranded.
            self.held_ids(queue_name).clear()
        return GuardedRedisConsumer(self, queue_name, prefetch, timeout)

    def held_ids(self, queue_name: str) -> HeldIds:
        """The ids of ``queue_name`` this process holds, shared by all its consumers of that queue."""
        with self._held_lock:
            return self._held.setdefault(queue_name, HeldIds())

    def acks(self, queue_name: str) -> Acks:
        """The acknowledgements of ``queue_name`` waiting to be sent, shared by all its consumers."""
        held = self.held_ids(queue_name)
        with self._held_lock:
            acks = self._acks.get(queue_name)
            if acks is None:
                acks = self._acks[queue_name] = Acks(lambda ids: self._send_acks(queue_name, ids), held)
            return acks

    def _send_acks(self, queue_name: str, redis_ids: list[str]) -> None:
        args = [queue_name, self.broker_id, current_millis(), *redis_ids]
        self._ack_script(keys=[self.namespace], args=args)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        with _stored_or_raise(f"message {message.message_id} of job {message.actor_name!r}"):
            return super().enqueue(message, delay=delay)  # type: ignore[no-any-return]

    def _should_do_maintenance(self, command: str) -> int:
        if getattr(self._forced, "on", False):
            return 1
        return super()._should_do_maintenance(command)  # type: ignore[no-any-return]

    def reap(self, queue: str) -> None:
        self._forced.on = True
        try:
            for name in (queue, dq_name(queue)):
                self.do_qsize(name)
        finally:
            self._forced.on = False

    def publish(self, messages: Sequence[Message[Any]], delay_ms: int | None) -> None:
        if len(messages) == 1:
            self.enqueue(messages[0], delay=delay_ms)
            return
        # A batch is written straight into the layout RedisBroker.enqueue's script writes (a hash
        # "<ns>:<queue>.msgs" of id -> message and a list "<ns>:<queue>" of ids), two commands per
        # queue in one MULTI, so a consumer never sees an id without its message.
        hooks = bool(self.middleware)
        encode = get_encoder().encode
        batch_id = uuid4().hex  # one random id per batch; each message adds its index
        batches: dict[str, tuple[list[str], dict[str, bytes]]] = {}
        sent = []
        for index, message in enumerate(messages):
            queue_name = message.queue_name
            redis_id = f"{batch_id}-{index}"
            options: dict[str, Any] = {"redis_message_id": redis_id}
            if delay_ms is not None:
                queue_name = dq_name(queue_name)
                options["eta"] = current_millis() + delay_ms
            fields = {
                "queue_name": queue_name,
                "actor_name": message.actor_name,
                "args": message.args,
                "kwargs": message.kwargs,
                "options": options,
                "message_id": message.message_id,
                "message_timestamp": message.message_timestamp,
            }
            if hooks:
                copy = message.copy(queue_name=queue_name, options=options)
                self.emit_before("enqueue", copy, delay_ms)
                sent.append(copy)
            ids, bodies = batches.setdefault(queue_name, ([], {}))
            ids.append(redis_id)
            bodies[redis_id] = encode(fields)
        pipe = self.client.pipeline(transaction=True)
        for queue_name, (ids, bodies) in batches.items():
            pipe.hset(f"{self.namespace}:{queue_name}.msgs", mapping=bodies)  # type: ignore[arg-type]
            pipe.rpush(f"{self.namespace}:{queue_name}", *ids)
        with _stored_or_raise(f"a batch of {len(messages)} messages"):
            pipe.execute()
        for message in sent:
            self.emit_after("enqueue", message, delay_ms)

    def publish_batch(self, batch: EnvelopeBatch, delay_ms: int | None) -> None:
        self.start_publish_batch(batch, delay_ms)()

    def start_publish_batch(self, batch: EnvelopeBatch, delay_ms: int | None) -> Callable[[], None]:
        """Write the batch's transaction and return at once; the function returned waits until Redis
        stored it (raising :class:`PublishError` if it did not)."""
        if self.middleware:  # the enqueue hooks need Message objects
            from ..actors import to_message

            self.publish([to_message(envelope) for envelope in batch], delay_ms)
            return already_stored
        queue_name, eta = batch.queue, ""
        if delay_ms is not None:
            queue_name, eta = dq_name(queue_name), f',"eta":{current_millis() + delay_ms}'
        prefix = f"{uuid4().hex}-"
        redis_ids = [f"{prefix}{index}" for index in range(len(batch))]
        bodies = message_bodies(batch, queue_name, [f'{{"redis_message_id":"{rid}"{eta}}}' for rid in redis_ids])
        what = f"a batch of {len(batch)} messages"
        messages_key, ids_key = f"{self.namespace}:{queue_name}.msgs", f"{self.namespace}:{queue_name}"
        fields = list(itertools.chain.from_iterable(zip(redis_ids, bodies, strict=True)))
        commands: list[Command] = [("MULTI",)]
        start = 0
        for piece in pieces(bodies, len):
            commands.append(("HSET", messages_key, *fields[2 * start : 2 * (start + len(piece))]))
            start += len(piece)
        commands += [("RPUSH", ids_key, *piece) for piece in pieces(redis_ids, len)]
        commands.append(("EXEC",))
        with _stored_or_raise(what):
            written = InFlight(self.client, commands)

        def wait() -> None:
            with _stored_or_raise(what):
                written.wait()

        return wait

    def queue_depth(self, queue: str) -> int:
        return sum(self.holdings(queue).values())

    def holdings(self, queue: str) -> dict[str, int]:
        ready_key, delayed_key = f"{self.namespace}:{queue}", f"{self.namespace}:{dq_name(queue)}"
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(ready_key)
        pipe.hlen(f"{delayed_key}.msgs")
        ready, delayed = pipe.execute()
        return {ready_key: int(ready), delayed_key: int(delayed)}

    def purge_queue(self, queue: str) -> int:
        dropped = self.queue_depth(queue)
        keys = [f"{self.namespace}:{name}{suffix}" for name in (queue, dq_name(queue)) for suffix in ("", ".msgs")]
        self.client.delete(*keys)
        return dropped

    def delete_queue(self, queue: str) -> None:
        """An empty queue is no key on Redis: purged, with Dramatiq's dead letters (``.XQ``)."""
        self.purge_queue(queue)
        self.client.delete(*(f"{self.namespace}:{xq_name(queue)}{suffix}" for suffix in ("", ".msgs")))

    def requeue_now(self, consumer: Any, message: Any) -> None:
        consumer.requeue([message])
