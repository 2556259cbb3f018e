"""Redis commands written now and their replies read later, so a producer builds its next batch
while Redis stores the last one.

redis-py's pipeline writes its commands and waits for every reply in one call (``execute``), and
its asyncio client would need the batches built in an event loop; neither lets CPU-bound code in the
caller's thread run between the write and the read. :class:`InFlight` does that on a connection
checked out of the client's own pool, so pool settings, TLS and credentials stay redis-py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

Command = tuple[Any, ...]
T = TypeVar("T")

PIECE_BYTES = 64 * 1024
"""About how many bytes of values one command carries (see :func:`pieces`)."""


def pieces(values: Sequence[T], size: Callable[[T], int]) -> list[Sequence[T]]:
    """``values`` cut into consecutive runs of equal count (the last may be shorter) carrying about
    :data:`PIECE_BYTES` each by ``size``: the values of one command each.

    redis-py packs each command into one buffer. Above the C allocator's mmap threshold (128 KiB)
    every such buffer is fresh pages, which cost more than the packing itself: 2.0 against 0.2 us
    per 1 KB value, measured with ``hiredis.pack_command`` on 500 and on 100 values. Runs of equal
    count keep the cut out of Python's per-value loop; values of very unequal sizes only make some
    runs larger than others.
    """
    if not values:
        return []
    runs = max(1, -(-sum(map(size, values)) // PIECE_BYTES))
    step = -(-len(values) // runs)
    return [values[start : start + step] for start in range(0, len(values), step)]


class InFlight:
    """``commands`` written to one connection of ``client``'s pool; :meth:`wait` reads their replies.

    The connection stays checked out until :meth:`wait` returns it, so nothing else reads those
    replies. A write that fails on a lost connection is made once more on a new one: a write that
    failed never reached the end of the commands, and a ``MULTI`` ... ``EXEC`` block without its
    ``EXEC`` changes nothing (send several commands in one, as the engines do). A second failure
    raises what redis-py raises.
    """

    def __init__(self, client: redis.Redis, commands: Sequence[Command]) -> None:
        self._pool = client.connection_pool
        self._commands = commands
        try:
            self._connection: Any = self._written()
        except (redis.ConnectionError, redis.TimeoutError):
            self._connection = self._written()

    def wait(self) -> list[Any]:
        """Each command's reply, in order. Raises the first error reply once all were read (an
        ``EXEC`` whose queued command failed counts as one), or the connection's error.

        A connection lost before every reply came is replaced and the commands are written once
        more, as redis-py's own pipeline retries: commands Redis ran before the loss run twice
        (at least once, never lost)."""
        if self._connection is None:
            raise RuntimeError("the replies of these commands were read already")
        try:
            replies = self._replies()
        except (redis.ConnectionError, redis.TimeoutError):
            self._connection = self._written()
            replies = self._replies()
        for reply in replies:
            failed = reply if isinstance(reply, Exception) else _failed_in_exec(reply)
            if failed is not None:
                raise failed
        return replies

    def _written(self) -> Any:
        connection = self._pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(self._commands))
        except BaseException:
            connection.disconnect()
            self._pool.release(connection)
            raise
        return connection

    def _replies(self) -> list[Any]:
        """Read every reply and give the connection back (dropped when reading failed)."""
        connection, self._connection = self._connection, None
        replies: list[Any] = []
        try:
            for _ in self._commands:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:  # the reply was read whole: the connection is fine
                    replies.append(exc)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self._pool.release(connection)
        return replies


def _failed_in_exec(reply: Any) -> Exception | None:
    if isinstance(reply, list):
        for item in reply:
            if isinstance(item, Exception):
                return item
    return None
