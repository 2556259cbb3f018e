"""kombu's Redis transport with a guarded read: every list item becomes a kombu message.

Celery gets it as ``broker_transport`` (``taskbridge_celery.guarded_redis:RedisTransport``), so the
worker and the producers use it in place of kombu's. Its channel pops items exactly as kombu does
and hands them to :func:`~taskbridge_celery.items.kombu_payload` instead of kombu's parser.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str

from .items import kombu_payload


class GuardedRedisChannel(redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel; only the parse of a popped item is ours.

    ``_brpop_read`` and ``_get`` repeat kombu 5.7's code line for line except for that parse:
    kombu parses inside them and offers no hook, and a popped item must not be lost.
    """

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next iteration reconnects.
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                self.connection._deliver(kombu_payload(item, dest), dest)
                return True
            raise Empty()
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    return kombu_payload(item, queue)
            self._maybe_update_queues_expire(client, queue)
            raise Empty()


class RedisTransport(redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`GuardedRedisChannel`."""

    Channel = GuardedRedisChannel
