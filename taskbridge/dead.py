"""Dead letters you can work with: list, show, replay and purge them on any engine.

Dead letters are read with :meth:`Engine.take` (``dead_letters=True``), so taskbridge's
``<queue>-dead`` records and an engine's own dead letters (Dramatiq's ``.XQ``) are seen alike.
Items are held while a command looks through a queue and released at the end, except those it
replays or purges, which are acknowledged once that is done.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .dispatch import DEAD_LETTER_JOB, schedule
from .duplicates import REPLAY_HEADER
from .engine import Engine, Taken, settle
from .envelope import Envelope, decode
from .errors import EnvelopeError
from .wire import unwrap

BATCH = 200


@dataclass
class DeadLetter:
    """One dead letter, as the commands show it."""

    id: str | None
    job: str | None
    reason: str
    attempt: int | None
    failed_at: float | None
    queue: str
    traceback: str | None = None
    body: str | None = None
    """The original message (its envelope JSON where it had one)."""
    body_encoding: str | None = None
    origin: str = "taskbridge"
    """``taskbridge`` for a ``<queue>-dead`` record, ``engine`` for the engine's own (e.g. Dramatiq's ``.XQ``)."""
    taken: Taken | None = field(default=None, repr=False, compare=False)

    @property
    def error(self) -> str:
        """The first line of the error: the exception line of the traceback, else the reason."""
        if self.traceback:
            lines = [line for line in self.traceback.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return self.reason.splitlines()[0] if self.reason else ""

    def summary(self) -> dict[str, Any]:
        """The fields ``dead list`` shows."""
        return {
            "id": self.id,
            "job": self.job,
            "queue": self.queue,
            "reason": self.reason,
            "attempt": self.attempt,
            "failed_at": self.failed_at,
            "error": self.error,
            "origin": self.origin,
        }

    def record(self) -> dict[str, Any]:
        """Everything ``dead show`` shows."""
        return {**self.summary(), "traceback": self.traceback, "body": self.body, "body_encoding": self.body_encoding}

    def envelope(self) -> Envelope | None:
        """The original envelope, if the dead letter carries a valid one."""
        if self.body is None or self.body_encoding:
            return None
        try:
            return decode(self.body)
        except EnvelopeError:
            return None


def read(item: Taken, queue: str) -> DeadLetter:
    """What a taken dead letter says, whatever wrote it."""
    unwrapped = unwrap(item.body)
    if unwrapped.envelope is None:
        return DeadLetter(
            None,
            None,
            f"unreadable dead letter: {unwrapped.reason}",
            None,
            None,
            queue,
            taken=item,
            body=item.body.decode("utf-8", "replace"),
            origin="engine",
        )
    try:
        envelope = decode(unwrapped.envelope)
    except EnvelopeError as exc:
        return DeadLetter(
            None,
            None,
            f"unreadable dead letter: {exc}",
            None,
            None,
            queue,
            taken=item,
            body=unwrapped.envelope,
            origin="engine",
        )
    if envelope.job != DEAD_LETTER_JOB:
        return DeadLetter(
            envelope.id,
            envelope.job,
            "dead-lettered by the engine (no reason recorded)",
            envelope.attempt,
            None,
            queue,
            body=unwrapped.envelope,
            origin="engine",
            taken=item,
        )
    headers = envelope.headers
    failed_at = headers.get("failed_at")
    return DeadLetter(
        id=headers.get("id"),
        job=headers.get("job"),
        reason=str(headers.get("reason") or ""),
        attempt=headers.get("attempt"),
        failed_at=float(failed_at) if isinstance(failed_at, int | float) else envelope.enqueued_at,
        queue=queue,
        traceback=headers.get("traceback"),
        body=headers.get("body"),
        body_encoding=headers.get("body_encoding"),
        taken=item,
    )


class DeadLetters:
    """The dead letters of some queues of one engine."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._removed: set[int] = set()

    def count(self, queue: str) -> int:
        """How many dead letters ``queue`` has (the engine's own included where it keeps any)."""
        return int(self.engine.depth(queue + self.settings.dead_letter_suffix))

    def scan(self, queue: str) -> Iterator[list[DeadLetter]]:
        """Every dead letter of ``queue``, a batch at a time, each taken and held until the scan ends
        (unless the caller replays or removes it meanwhile); the rest are released when it stops."""
        held: list[Taken] = []
        try:
            while True:
                items = self.engine.take(queue, BATCH, dead_letters=True)
                if not items:
                    return
                held.extend(items)
                yield [read(item, queue) for item in items]
                # Replayed and removed ones are gone for good: only the rest is given back at the end.
                held = [item for item in held if id(item) not in self._removed]
                self._removed.clear()
        finally:
            settle([item for item in held if id(item) not in self._removed], ack=False)

    def replay(self, letters: list[DeadLetter]) -> int:
        """Publish the original jobs again with attempts reset (a chain resumes where it stopped), then
        remove their dead letters; those that carry no envelope to run stay. Returns how many ran again."""
        now = time.time()
        runnable: list[tuple[DeadLetter, Envelope]] = []
        for letter in letters:
            envelope = letter.envelope()
            if envelope is not None:
                expired = envelope.expires_at is not None and envelope.expires_at <= now
                expires_at = None if expired else envelope.expires_at
                # A new delivery: the finished run of this id and attempt does not stop it (duplicates).
                headers = {**envelope.headers, REPLAY_HEADER: uuid.uuid4().hex}
                replayed = envelope.with_changes(attempt=1, not_before=None, expires_at=expires_at, headers=headers)
                runnable.append((letter, replayed))
        schedule(self.engine, [envelope for _, envelope in runnable], 0, self.settings)
        self.remove([letter for letter, _ in runnable])
        return len(runnable)

    def remove(self, letters: list[DeadLetter]) -> None:
        """Drop the dead letters for good (one round trip per batch where the engine allows)."""
        taken = [letter.taken for letter in letters if letter.taken is not None]
        settle(taken, ack=True)
        self._removed.update(id(item) for item in taken)


def older_than(letter: DeadLetter, seconds: float, now: float | None = None) -> bool:
    """Whether the dead letter failed more than ``seconds`` ago (one without a time counts as old)."""
    if letter.failed_at is None:
        return True
    return (now or time.time()) - letter.failed_at > seconds
