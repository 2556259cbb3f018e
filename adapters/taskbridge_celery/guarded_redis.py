"""kombu's Redis transport with a guarded, atomic take: every list item becomes a kombu message,
and no item is lost when the connection breaks while it is being taken.

Celery gets it as ``broker_transport`` (``taskbridge_celery.guarded_redis:RedisTransport``), so the
worker and the producers use it in place of kombu's.

kombu takes an item with BRPOP and records it as unacknowledged (the ``unacked`` hash and
``unacked_index``) in a second command once the reply arrived. A connection cut between the two
loses the item: a BRPOP reply still on the wire, or a record whose write fails, and the item, gone
from its list, exists nowhere. Here one script (:data:`_TAKE`) pops the item and records it in
the same step, so an item is always in its list or recorded; kombu's visibility-timeout restore
(``QoS.restore_visible``) brings back a recorded item nobody acknowledged. When nothing is
waiting, the channel blocks on ``BLMOVE key key RIGHT RIGHT`` (which moves the item onto
itself: it waits without taking anything) and takes again as soon as it returns.

Every item is read by :func:`~taskbridge_celery.items.kombu_payload` instead of kombu's parser.
"""

from __future__ import annotations

from time import monotonic, time
from typing import Any

from celery.worker import state as worker_state
from kombu.transport import redis, virtual
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from .items import ITEM_HEADER, kombu_payload, new_tag

TAKEN = b"tb-taken:"
"""Start of an unacknowledged record written by :data:`_TAKE`: then the list's name, a newline
and the item exactly as the list held it (kombu's own records are JSON)."""

_TAKE = """
local lists = #KEYS - 2
for i = 1, lists do
  local item = redis.call('rpop', KEYS[i])
  if item then
    redis.call('hset', KEYS[lists + 1], ARGV[1], ARGV[2 + lists + i] .. item)
    redis.call('zadd', KEYS[lists + 2], ARGV[2], ARGV[1])
    return {ARGV[2 + i], item}
  end
end
return false
"""
"""KEYS: the lists in the order they are tried, then the unacknowledged hash and its index.
ARGV: the delivery tag, the time, each list's name (without the key prefix), then each list's
record prefix. Returns the list's name and the item, or nil when every list is empty."""


MULTI_QUEUE_WAIT = 0.05
"""Seconds a worker consuming several queues watches one of them before it looks at the next."""


class GuardedQoS(redis.QoS):  # type: ignore[misc]
    """kombu's Redis QoS, for messages :data:`_TAKE` already recorded; a closing channel leaves
    the messages a pool process is running unacknowledged.

    kombu puts every message of a closing channel back in its queue, the running ones too, so a
    lost connection made each running job run again. On Redis an acknowledgement needs no
    particular connection (it deletes the message's record): the running job's acknowledgement
    goes over the next connection, and should the worker die first, the record brings the
    message back after the visibility timeout.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        channel: GuardedRedisChannel = self.channel
        if channel.recorded(delivery_tag):
            virtual.QoS.append(self, message, delivery_tag)  # in memory only: Redis has the record
        else:
            super().append(message, delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        running = _running_tags()
        delivered: Any = self._delivered  # kombu declares it None on the class
        with self.channel.conn_or_acquire(client) as client:
            for tag in delivered:
                if tag not in running:
                    self.restore_by_tag(tag, client=client)
        delivered.clear()

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """kombu's restore, which also reads the records :data:`_TAKE` wrote."""
        channel: GuardedRedisChannel = self.channel

        def restore_transaction(pipe: Any) -> None:
            record = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            if not record:
                return
            if record.startswith(TAKEN):
                channel.put_back(record[len(TAKEN) :], pipe, leftmost)
            else:
                message, exchange, routing_key = loads(bytes_to_str(record))
                channel._do_restore_message(message, exchange, routing_key, pipe, leftmost)

        with channel.conn_or_acquire(client) as client:
            client.transaction(restore_transaction, self.unacked_key)


def _running_tags() -> set[str]:
    """Delivery tags of the messages this worker's pool processes are running (accepted)."""
    return {request.message.delivery_tag for request in tuple(worker_state.active_requests)}


class GuardedRedisChannel(redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel; the take (:data:`_TAKE` in place of BRPOP), the parse of an item and
    the restore of the records :data:`_TAKE` writes are ours.

    ``_brpop_start``, ``_brpop_read`` and ``_get`` follow kombu 5.7's code (its event loop and
    health checks drive them by those names) with the take in place of BRPOP or RPOP.
    """

    QoS = GuardedQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sent: str | None = None
        """The command whose reply ``_brpop_read`` reads: ``EVAL`` (a take) or ``BLMOVE`` (a wait)."""
        self._waiting = False
        """Whether the last take found nothing, so the next command waits for an item."""
        self._looks = 0
        self._tag: str | None = None
        self._recorded: set[str] = set()

    def recorded(self, tag: str) -> bool:
        """Whether :data:`_TAKE` recorded the message ``tag`` (told once, to :class:`GuardedQoS`)."""
        if tag in self._recorded:
            self._recorded.discard(tag)
            return True
        return False

    def put_back(self, record: bytes, pipe: Any, leftmost: bool) -> None:
        """Queue again, in ``pipe``, the item of a record :data:`_TAKE` wrote (``list\\nitem``)."""
        key, _, item = record.partition(b"\n")
        name = bytes_to_str(key)
        queue = name.rsplit(self.sep, 1)[0]
        payload = kombu_payload(item, queue)
        if ITEM_HEADER in (payload.get("headers") or {}):  # not a kombu message: back as it was
            (pipe.lpush if leftmost else pipe.rpush)(name, item)
        else:  # as kombu restores a message: marked redelivered, on the list of its priority
            if payload.get("headers") is None:
                payload["headers"] = {}
            self._do_restore_message(payload, "", queue, pipe, leftmost)

    def _lists(self, queues: list[str]) -> list[str]:
        return [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]

    def _take_command(self, lists: list[str], tag: str) -> list[Any]:
        prefix = self.global_keyprefix
        return [
            "EVAL",
            _TAKE,
            len(lists) + 2,
            *(prefix + name for name in lists),
            prefix + self.unacked_key,
            prefix + self.unacked_index_key,
            tag,
            time(),
            *lists,
            *(TAKEN + name.encode() + b"\n" for name in lists),
        ]

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        lists = self._lists(queues)
        if not lists:
            return
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        if self._waiting:
            # BLMOVE watches one list: the first priority's list of one queue (where every message
            # without a priority goes; the other priorities' lists are taken from on each wake). With
            # several queues it watches each in turn, briefly, so none waits a whole timeout.
            self._looks += 1
            key = self.global_keyprefix + queues[self._looks % len(queues)]
            if len(queues) > 1:
                timeout = min(timeout or MULTI_QUEUE_WAIT, MULTI_QUEUE_WAIT)
            self._sent = "BLMOVE"
            connection.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", timeout or 0)
        else:
            self._tag = new_tag()
            self._sent = "EVAL"
            connection.send_command(*self._take_command(lists, self._tag))

    def _brpop_read(self, **options: Any) -> bool:
        sent, self._sent = self._sent, None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, sent or "EVAL", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next iteration reconnects.
                self.client.connection.disconnect()
                raise
            if sent == "BLMOVE":  # an item arrived, or the wait timed out: take next
                self._waiting = False
                raise Empty()
            if reply:
                name, item = reply
                queue = bytes_to_str(name).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(queue)
                tag = self._tag
                assert tag is not None
                self._recorded.add(tag)
                self.connection._deliver(kombu_payload(item, queue, tag), queue)
                return True
            self._waiting = True
            raise Empty()
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            tag = new_tag()
            command = self._take_command(self._lists([queue]), tag)
            reply = client.execute_command(*command)
            self._maybe_update_queues_expire(client, queue)
            if reply:
                self._recorded.add(tag)
                return kombu_payload(reply[1], queue, tag)
            raise Empty()


class RedisTransport(redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`GuardedRedisChannel`."""

    Channel = GuardedRedisChannel
