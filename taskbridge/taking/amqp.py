"""RabbitMQ: a batch taken by a consumer that lives for the one batch (its prefetch the batch size),
held unacknowledged on a channel of the taker's own, then acknowledged or rejected back.

One ``basic_get`` per message costs a round trip each; a consumer gets the whole batch in a few. A
taker that dies before it settles loses nothing: RabbitMQ delivers its held messages again, marked
redelivered. Each engine brings its own client library (py-amqp for Celery, pika for Dramatiq) as
an :class:`AmqpChannel`; the holding and settling logic is here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .held import Held

if TYPE_CHECKING:
    from ..engine import Taken

GET_WAIT = 1.0
"""Seconds a batch's consumer waits for the next message before the batch is taken as it is (the
count said more were ready, but another consumer got them first)."""

Delivery = tuple[int, bytes, bool]
"""A delivered message: its delivery tag, body and redelivered flag."""


class AmqpChannel(Protocol):
    """The calls a taker makes, on one client library's connection of its own."""

    @property
    def is_open(self) -> bool:
        """Whether the connection still works (when it broke, the broker took back what was held)."""

    def ready(self, name: str) -> int | None:
        """Messages ready in queue ``name``; ``None`` when there is no such queue."""

    def get(self, name: str, count: int, wait: float) -> list[Delivery]:
        """Up to ``count`` messages of ``name``, unacknowledged; stops early after ``wait`` seconds
        without one."""

    def ack(self, tag: int, *, multiple: bool) -> None:
        """Acknowledge the message ``tag`` (and every one held before it, with ``multiple``)."""

    def reject(self, tags: Sequence[int]) -> None:
        """Put the messages back in their queues, and wait until the broker has (so a count made
        next sees them)."""

    def close(self) -> None:
        """Close the connection; what is still held goes back to its queue."""


class AmqpTake:
    """An engine's take on RabbitMQ through the channel ``open_channel`` gives (opened on first use)."""

    def __init__(self, open_channel: Callable[[], AmqpChannel]) -> None:
        self._open_channel = open_channel
        self._channel: AmqpChannel | None = None
        self._held: set[int] = set()

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        """Up to ``limit`` messages of the queues ``names`` (pairs of the engine's queue name and the
        taskbridge queue its messages are reported under), oldest first."""
        if self._channel is not None and not self._channel.is_open:
            self.close()
        if self._channel is None:
            self._channel = self._open_channel()
        taken: list[Taken] = []
        for name, queue in names:
            while len(taken) < limit:
                ready = self._channel.ready(name)
                if not ready:
                    break
                got = self._channel.get(name, min(ready, limit - len(taken)), GET_WAIT)
                if not got:
                    break
                for tag, body, redelivered in got:
                    self._held.add(tag)
                    taken.append(Held(self, None, queue, tag, body, redelivered))
        return taken

    def ack_many(self, items: Sequence[Held[Any]]) -> None:
        """Acknowledge the items: one frame when they are all this taker holds up to the last of them."""
        self._settle(items, ack=True)

    def release_many(self, items: Sequence[Held[Any]]) -> None:
        """Put the items back in their queues."""
        self._settle(items, ack=False)

    def _settle(self, items: Sequence[Held[Any]], *, ack: bool) -> None:
        if not items or self._channel is None:
            return
        tags = {int(item.handle) for item in items}
        last = max(tags)
        if ack and all(tag in tags for tag in self._held if tag <= last):
            self._channel.ack(last, multiple=True)
        elif ack:
            for tag in sorted(tags):
                self._channel.ack(tag, multiple=False)
        else:
            self._channel.reject(sorted(tags))
        self._held -= tags

    def close(self) -> None:
        """Close the channel's connection (what is still held goes back to its queue)."""
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._channel.close()
        self._channel = None
        self._held.clear()
