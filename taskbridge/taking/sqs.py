"""SQS: items taken with ReceiveMessage under a visibility timeout, acknowledged with
DeleteMessageBatch and released with ChangeMessageVisibilityBatch to 0 (boto3's client, as is).

A taker killed before it settles loses nothing: SQS makes its messages visible again when the
visibility timeout ends. A message received more than once before is marked ``redelivered``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .held import Held

if TYPE_CHECKING:
    from ..engine import Taken

TAKE_VISIBILITY = 120
"""Seconds a taken message stays invisible to workers before SQS delivers it again."""
_BATCH = 10
"""SQS's most messages per ReceiveMessage, DeleteMessageBatch or ChangeMessageVisibilityBatch."""


SqsTaken = Held[str]
"""One message received by an :class:`SqsTaker`: ``place`` its queue URL, ``handle`` its receipt handle."""


class SqsTaker:
    """Receives and settles messages of SQS queues through one boto3 client."""

    def __init__(self, client: Any, *, visibility: int = TAKE_VISIBILITY) -> None:
        self.client = client
        self.visibility = visibility

    def take(self, url: str, queue: str, limit: int) -> list[SqsTaken]:
        """Up to ``limit`` visible messages; stops at the first receive that returns none (which
        waits a second, so SQS asks all its servers before the queue is called empty)."""
        taken: list[SqsTaken] = []
        while len(taken) < limit:
            response = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(_BATCH, limit - len(taken)),
                VisibilityTimeout=self.visibility,
                WaitTimeSeconds=0 if taken else 1,
                AttributeNames=["ApproximateReceiveCount"],
            )
            messages = response.get("Messages") or []
            if not messages:
                break
            for message in messages:
                count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                taken.append(SqsTaken(self, url, queue, message["ReceiptHandle"], message["Body"].encode(), count > 1))
        return taken

    def ack_many(self, items: Sequence[SqsTaken]) -> None:
        """Delete the messages, ten per request."""
        self._each_batch(items, self.client.delete_message_batch, {})

    def release_many(self, items: Sequence[SqsTaken]) -> None:
        """Make the messages visible again at once."""
        self._each_batch(items, self.client.change_message_visibility_batch, {"VisibilityTimeout": 0})

    def _each_batch(self, items: Sequence[SqsTaken], call: Any, extra: dict[str, Any]) -> None:
        by_url: dict[str, list[SqsTaken]] = {}
        for item in items:
            by_url.setdefault(item.place, []).append(item)
        for url, group in by_url.items():
            for start in range(0, len(group), _BATCH):
                chunk = group[start : start + _BATCH]
                entries = [{"Id": str(i), "ReceiptHandle": t.handle, **extra} for i, t in enumerate(chunk)]
                failed = call(QueueUrl=url, Entries=entries).get("Failed") or []
                if failed:
                    raise RuntimeError(f"SQS could not settle {len(failed)} taken messages of {url}: {failed[0]}")


class SqsTake:
    """An engine's take on SQS: ``resolve`` gives the URL and boto3 client of a queue name as the
    engine lays it out (``None``: no such queue), this takes through one :class:`SqsTaker` per client."""

    def __init__(self, resolve: Callable[[str], tuple[str, Any] | None]) -> None:
        self._resolve = resolve
        self._takers: dict[int, SqsTaker] = {}

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        """Up to ``limit`` messages of the queues ``names`` (pairs of the engine's name and the
        taskbridge queue its messages are reported under)."""
        taken: list[Taken] = []
        for name, queue in names:
            if len(taken) >= limit:
                break
            found = self._resolve(name)
            if found is None:
                continue
            url, client = found
            taker = self._takers.setdefault(id(client), SqsTaker(client))
            taken.extend(taker.take(url, queue, limit - len(taken)))
        return taken

    def close(self) -> None:
        """The clients are the engine's; nothing of its own to close."""
        self._takers.clear()
