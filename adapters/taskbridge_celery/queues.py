"""Depth and purge on Redis (list length) and RabbitMQ (passive queue declare); a RabbitMQ worker's
queues declared before its pool starts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from amqp.exceptions import NotFound
from kombu import Connection
from kombu.exceptions import ChannelError

from .app import queue
from .connection import ProcessConnection

_MISSING = (NotFound, ChannelError)

log = logging.getLogger("taskbridge.celery")


class BrokerQueues:
    """Counts and purges queues through kombu's channel; a queue that does not exist holds 0."""

    def __init__(self, connection: ProcessConnection, *, scheme: str) -> None:
        self._connection = connection
        # A failed passive declare closes a RabbitMQ channel: use a throwaway one there.
        self._own_channel = scheme == "amqp"
        # kombu's Redis passive declare asks EXISTS of the key without its global_keyprefix, so it
        # never finds a prefixed queue; a plain declare there creates nothing and returns the size.
        self._passive = scheme != "redis"

    def depth(self, name: str) -> int:
        def count(connection: Connection) -> int:
            if self._own_channel:
                with connection.channel() as channel:
                    return _declared_size(channel, name, self._passive)
            return _declared_size(connection.default_channel, name, self._passive)

        return self._connection.call(count)

    def purge(self, name: str) -> int:
        def purge(connection: Connection) -> int:
            if self._own_channel:
                with connection.channel() as channel:
                    return _purged(channel, name)
            return _purged(connection.default_channel, name)

        return self._connection.call(purge)

    def delete(self, name: str) -> None:
        """Remove queue ``name`` from RabbitMQ; on Redis, where an empty list is no key, purge it
        (kombu's binding keys stay)."""
        if not self._own_channel:
            self.purge(name)
            return

        def delete(connection: Connection) -> None:
            with connection.channel() as channel, contextlib.suppress(*_MISSING):
                channel.queue_delete(queue=name)
            # kombu declares a queue once per connection before publishing to it: forget it, or the
            # next publish goes to no queue and RabbitMQ drops it.
            declared = connection.declared_entities
            if declared is not None:
                declared.discard(hash(queue(name)))  # kombu keeps the hash

        self._connection.call(delete)

    def settle(self, consumed: Sequence[str], written: Sequence[str]) -> None:
        """Declare the queues a worker consumes, and those of ``written`` that exist already (its
        dead-letter queues), before its pool processes are forked: a queue that exists with other
        arguments is adopted, and warned about, once here rather than once in each pool process."""

        def declare(connection: Connection) -> None:
            channel = connection.default_channel
            for name in consumed:
                queue(name).bind(channel).declare()
            for name in written:
                try:
                    if _exists(connection, name):
                        queue(name).bind(channel).declare()
                except connection.channel_errors as exc:
                    # Writing to it will tell, and hold the outcome while it cannot (taskbridge.carrying).
                    log.debug("could not declare queue %r at start: %s", name, exc)

        self._connection.call(declare)


def _exists(connection: Connection, name: str) -> bool:
    with connection.channel() as channel:  # a missing queue's 404 closes the channel it is asked on
        try:
            channel.queue_declare(queue=name, passive=True)
        except _MISSING:
            return False
    return True


def _declared_size(channel: object, name: str, passive: bool) -> int:
    try:
        return int(channel.queue_declare(queue=name, passive=passive).message_count)  # type: ignore[attr-defined]
    except _MISSING:
        return 0


def _purged(channel: object, name: str) -> int:
    try:
        return int(channel.queue_purge(queue=name) or 0)  # type: ignore[attr-defined]
    except _MISSING:
        return 0
