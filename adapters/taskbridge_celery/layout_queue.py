"""The kombu queue every Celery producer and worker declares: the layout's, or on RabbitMQ the one
that already exists with other arguments (taskbridge.adopted_queues).

kombu declares a queue on the channel it then uses (a worker's consumer channel, a producer's
channel), and RabbitMQ closes that channel on a refused declaration, which stops a Celery worker
(``Unrecoverable error: PreconditionFailed``). On RabbitMQ the declaration is therefore made on a
channel of its own: the layout's declaration first, and when the queue exists with other arguments,
a passive one that takes it as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import amqp
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Queue

from taskbridge import adopted_queues


class LayoutQueue(Queue):  # type: ignore[misc]
    """A kombu queue that, on RabbitMQ, adopts an existing queue declared with other arguments."""

    def queue_declare(self, nowait: bool = False, passive: bool = False, channel: Any = None) -> Any:
        """Declare the queue (kombu's signature); on RabbitMQ on a channel of its own."""
        channel = channel or self.channel
        if passive or not isinstance(channel, amqp.Channel):
            return super().queue_declare(nowait=nowait, passive=passive, channel=channel)
        declare: Callable[..., Any] = super().queue_declare
        connection = channel.connection
        if not adopted_queues.is_adopted(self.name):
            with _own_channel(connection) as own:
                try:
                    return declare(passive=False, channel=own)
                except PreconditionFailed as exc:
                    adopted_queues.adopt(self.name, getattr(self, "queue_arguments", None) or {}, str(exc.reply_text))
        with _own_channel(connection) as own:
            try:
                return declare(passive=True, channel=own)
            except NotFound:
                adopted_queues.forget(self.name)  # deleted since: the layout's declaration applies again
        with _own_channel(connection) as own:
            return declare(passive=False, channel=own)


@contextlib.contextmanager
def _own_channel(connection: amqp.Connection) -> Iterator[amqp.Channel]:
    channel = connection.channel()
    try:
        yield channel
    finally:
        if channel.is_open:
            with contextlib.suppress(Exception):
                channel.close()
