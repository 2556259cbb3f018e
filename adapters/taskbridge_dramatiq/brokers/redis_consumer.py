"""The Redis consumer: fetches ids with their items, guards every item, and never strands a fetched id.

Dramatiq's fetch moves ids from the queue list into this worker's acks set and returns only the
items. Two things then go wrong: an item Dramatiq cannot decode crashes the consumer thread and
strands the rest of the batch in the acks set; and a fetch whose reply is lost in a connection
reset (or retried by redis-py) strands the ids it moved. The worker keeps heartbeating under the
same id, so Dramatiq's maintenance never hands those ids back while the worker lives.

Here the fetch returns ``id, item`` pairs, every item goes through :func:`guard.read_item`, and
the broker remembers which ids this process holds (delivered, not yet acknowledged). Every fetch
compares that count with the size of the acks set in the same script; when the set holds more,
the ids it holds beyond those remembered are put back at the head of the queue before fetching.

Acknowledgements go out in groups (:class:`Acks`): Dramatiq sends one script call per message from
the worker thread that ran it; here a worker thread that finds an ack call of its queue on its way
leaves its id to that call's sender, which sends every id waiting in one call before it goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed

from ..outage import connected
from .guard import read_item

# KEYS: namespace; ARGV: queue, worker id, now (ms), how many to fetch, how many ids this process holds.
# Returns {1, id, item, id, item, ...}, or {0} when the acks set holds ids this process does not.
FETCH = """
local queue, worker, now = ARGV[1], ARGV[2], ARGV[3]
local count, held = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids_key = KEYS[1] .. ":" .. queue
local items_key = ids_key .. ".msgs"
local acks = KEYS[1] .. ":__acks__." .. worker .. "." .. queue
redis.call("zadd", KEYS[1] .. ":__heartbeats__", now, worker)
if redis.call("scard", acks) > held then
    return {0}
end
local reply = {1}
for _ = 1, count do
    local id = redis.call("lpop", ids_key)
    if not id then
        break
    end
    local item = redis.call("hget", items_key, id)
    if item then
        redis.call("sadd", acks, id)
        table.insert(reply, id)
        table.insert(reply, item)
    end
end
return reply
"""

# KEYS: namespace; ARGV: queue, worker id, now (ms), then the ids to acknowledge.
# Removes each id from the acks set and, if it was there, its item (Dramatiq's "ack", for many ids).
ACK = """
local queue, worker, now = ARGV[1], ARGV[2], ARGV[3]
local items_key = KEYS[1] .. ":" .. queue .. ".msgs"
local acks = KEYS[1] .. ":__acks__." .. worker .. "." .. queue
redis.call("zadd", KEYS[1] .. ":__heartbeats__", now, worker)
for i = 4, #ARGV do
    if redis.call("srem", acks, ARGV[i]) > 0 then
        redis.call("hdel", items_key, ARGV[i])
    end
end
return 0
"""

# KEYS: namespace; ARGV: queue, worker id, now (ms), then the ids this process holds.
# Puts every other id of the acks set back at the head of the queue; returns how many.
RECOVER = """
local queue, worker, now = ARGV[1], ARGV[2], ARGV[3]
local ids_key = KEYS[1] .. ":" .. queue
local items_key = ids_key .. ".msgs"
local acks = KEYS[1] .. ":__acks__." .. worker .. "." .. queue
redis.call("zadd", KEYS[1] .. ":__heartbeats__", now, worker)
local held = {}
for i = 4, #ARGV do
    held[ARGV[i]] = true
end
local recovered = 0
for _, id in ipairs(redis.call("smembers", acks)) do
    if not held[id] then
        redis.call("srem", acks, id)
        if redis.call("hexists", items_key, id) == 1 then
            redis.call("lpush", ids_key, id)
            recovered = recovered + 1
        end
    end
end
return recovered
"""


class HeldIds:
    """The ids of one queue this process was handed and has not yet acknowledged or given back.

    Shared by every consumer the worker creates for the queue (Dramatiq makes a new one after each
    connection error, while the messages the old one delivered are still running)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def add(self, redis_id: str) -> None:
        with self._lock:
            self._ids.add(redis_id)

    def discard(self, *redis_ids: str) -> None:
        with self._lock:
            self._ids.difference_update(redis_ids)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


class Acks:
    """The acknowledgements of one queue, sent in groups by the worker threads themselves.

    A worker thread's ack joins the ids waiting; if no thread is sending, it sends them all in one
    call and repeats while more came in meanwhile, otherwise it leaves its id to the thread that
    is sending and goes on (its message's outcome is stored: only the ack is left). An id leaves
    ``held`` once its ack is stored. When a call fails, its ids wait for the next ack, and the
    thread raises for Dramatiq to retry its own ack, which sends them all again."""

    def __init__(self, send: Callable[[list[str]], None], held: HeldIds) -> None:
        self._send = send
        self._held = held
        self._lock = threading.Lock()
        self._waiting: dict[str, None] = {}  # ids in the order acknowledged, each once
        self._sending: list[str] = []  # the ids of the call on its way

    def __len__(self) -> int:
        """Ids acknowledged by their job's thread whose ack is not stored yet."""
        with self._lock:
            return len(self._waiting) + len(self._sending)

    def ack(self, redis_id: str) -> None:
        with self._lock:
            self._waiting[redis_id] = None
            if self._sending:
                return
            ids = self._sending = list(self._waiting)
            self._waiting.clear()
        while ids:
            try:
                self._send(ids)
            except BaseException:
                with self._lock:
                    self._waiting = dict.fromkeys(ids) | self._waiting
                    self._sending = []
                raise
            self._held.discard(*ids)
            with self._lock:
                ids = self._sending = list(self._waiting)
                self._waiting.clear()


class GuardedRedisConsumer(_RedisConsumer):  # type: ignore[misc]
    """Dramatiq's Redis consumer with the fetch, decode and bookkeeping described in this module."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.held: HeldIds = broker.held_ids(queue_name)
        self.acks: Acks = broker.acks(queue_name)
        self.pairs: list[tuple[str, bytes]] = []

    @property
    def outstanding_message_count(self) -> int:
        # A message whose ack is on its way (in a group) no longer counts: its worker thread is free.
        return max(0, len(self.held) - len(self.acks)) + len(self.pairs)

    def ack(self, message: MessageProxy) -> None:
        self.queued_message_ids.discard(message.message_id)
        try:
            self.acks.ack(message.options["redis_message_id"])
        except redis.ConnectionError as exc:  # it may not have happened; Dramatiq retries
            raise ConnectionClosed(exc) from None

    def nack(self, message: MessageProxy) -> None:
        super().nack(message)
        self.held.discard(message.options["redis_message_id"])

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        try:
            super().requeue(messages)
        except redis.ConnectionError as exc:  # Dramatiq's consumer thread dies of anything else here
            raise ConnectionClosed(exc) from None
        self.held.discard(*(message.options["redis_message_id"] for message in messages))

    def close(self) -> None:
        """Hand back the fetched items not yet delivered, so they need not wait for a recovery."""
        ids, self.pairs = [redis_id for redis_id, _ in self.pairs], []
        if ids:
            try:
                self.broker.do_requeue(self.queue_name, *ids)
            except redis.ConnectionError as exc:  # the next fetch's recovery puts them back
                raise ConnectionClosed(exc) from None

    def __next__(self) -> MessageProxy | None:
        try:
            if not self.pairs:
                self.pairs = self._fetch()
                connected()
                if not self.pairs:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
            redis_id, item = self.pairs.pop(0)
            self.misses = 0
            message = read_item(item, self.queue_name, known_actors=self.broker.actors)
            message.options["redis_message_id"] = redis_id  # the id it was fetched under, whoever wrote it
            self.held.add(redis_id)
            self.queued_message_ids.add(message.message_id)
            return MessageProxy(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _fetch(self) -> list[tuple[str, bytes]]:
        room = self.prefetch - self.outstanding_message_count
        if room <= 0:
            return []
        fetch, recover = self.broker.consumer_scripts
        args = [self.queue_name, self.broker.broker_id, current_millis()]
        reply = fetch(keys=[self.broker.namespace], args=[*args, room, len(self.held)])
        if reply[0] == 0:
            recovered = recover(keys=[self.broker.namespace], args=[*args, *self.held.snapshot()])
            if recovered:
                self.logger.warning(
                    "put %d fetched but undelivered message(s) of %r back in the queue", recovered, self.queue_name
                )
            reply = fetch(keys=[self.broker.namespace], args=[*args, room, len(self.held)])
        ids_and_items = reply[1:]
        return [(_text(ids_and_items[i]), ids_and_items[i + 1]) for i in range(0, len(ids_and_items), 2)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
