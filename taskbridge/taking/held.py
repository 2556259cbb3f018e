"""One item a taker holds: taken out of its queue, not run, until acknowledged or released."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

PlaceT = TypeVar("PlaceT")


class Settles(Protocol):
    """A taker: settles many of its held items in one call (one round trip where it can)."""

    def ack_many(self, items: Sequence[Held[Any]]) -> None: ...

    def release_many(self, items: Sequence[Held[Any]]) -> None: ...


@dataclass
class Held(Generic[PlaceT]):
    """An item held by ``taker``; it fits :class:`taskbridge.engine.Taken`.

    ``place`` is where it came from (a Redis key, an SQS queue URL), ``handle`` what the transport
    settles it by (a holding token, a receipt handle, a delivery tag).
    """

    taker: Settles
    place: PlaceT
    queue: str
    handle: str | int
    body: bytes
    redelivered: bool = False

    def ack(self) -> None:
        self.taker.ack_many([self])

    def release(self) -> None:
        self.taker.release_many([self])
