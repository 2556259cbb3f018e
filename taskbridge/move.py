"""Moving a backlog from one engine x transport to another without running it.

Items are taken from the source with :meth:`Engine.take`, read with :func:`taskbridge.wire.unwrap`,
published to the target through :func:`taskbridge.publishing.schedule` (so a remaining delay longer
than the target transport holds hops like any other), and acknowledged at the source only after
the target's ``publish`` returned, which means stored (publisher confirms or a transaction on
RabbitMQ, the reply on Redis and SQS). One batch is in flight at a time, so memory stays bounded
whatever the backlog.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import Settings
from .engine import Engine, Taken, settle
from .envelope import Envelope, decode
from .errors import EnvelopeError
from .publishing import DEAD_LETTER_JOB, publish_dead_letter, schedule
from .wire import unwrap

DEFAULT_BATCH = 500
MAX_HELD_MALFORMED = 10_000
"""Malformed dead letters are left where they are, so they are held (not taken again) until the
queue is done; past this many the queue stops early and says so."""


@dataclass
class QueueReport:
    """What moving one queue did."""

    queue: str
    moved: int = 0
    delayed: int = 0
    """Of ``moved``: published with the delay they still had."""
    malformed: int = 0
    """Items that carry no envelope: dead-lettered at the source (waiting jobs) or left in place (dead letters)."""
    possibly_twice: int = 0
    """Of ``moved``: items the source marks as taken before by a taker that stopped without settling
    them, so the target may already hold a copy."""
    left: int = 0
    """Still waiting at the source after the move (arrived meanwhile, or held out of reach, e.g. SQS delays)."""
    note: str = ""


Progress = Callable[[str, int], None]
"""Called with the queue and how many items were just settled."""


@dataclass
class Mover:
    """Moves queues from ``source`` to ``target``; each engine with its own settings."""

    source: Engine
    target: Engine
    source_settings: Settings
    target_settings: Settings
    batch: int = DEFAULT_BATCH

    def move(
        self, queues: Sequence[str], *, dead_letters: bool = False, progress: Progress | None = None
    ) -> list[QueueReport]:
        """Move every waiting item (or every dead letter) of ``queues``; one report per queue."""
        return [self.move_queue(queue, dead_letters=dead_letters, progress=progress) for queue in queues]

    def move_queue(self, queue: str, *, dead_letters: bool = False, progress: Progress | None = None) -> QueueReport:
        report = QueueReport(queue)
        held: list[Taken] = []
        try:
            while True:
                items = self.source.take(queue, self.batch, dead_letters=dead_letters)
                if not items:
                    break
                bad = self._move_batch(queue, items, report, dead_letters)
                if dead_letters:
                    held.extend(bad)
                    if len(held) >= MAX_HELD_MALFORMED:
                        report.note = f"stopped early: {len(held)} malformed dead letters are in the way"
                        break
                if progress is not None:
                    progress(queue, len(items))
        finally:
            settle(held, ack=False)
        report.left = self._depth(queue, dead_letters)
        return report

    def _move_batch(self, queue: str, items: list[Taken], report: QueueReport, dead_letters: bool) -> list[Taken]:
        """Publish the batch's envelopes to the target, then acknowledge them at the source; returns the
        malformed dead letters, which stay held. On a failed publish the batch is released and the error raised."""
        now = time.time()
        by_delay: dict[int, list[Envelope]] = {}
        records: list[Envelope] = []
        good: list[Taken] = []
        bad: list[tuple[Taken, str]] = []
        for item in items:
            envelope, reason = _read(item.body)
            if envelope is None:
                bad.append((item, reason or "no envelope"))
                continue
            good.append(item)
            if dead_letters:
                records.append(envelope)
                continue
            remaining = (envelope.not_before or 0.0) - now
            # Whole seconds, rounded up: one publish per second of delay, never earlier than due.
            by_delay.setdefault(math.ceil(remaining) if remaining > 0 else 0, []).append(envelope)
        try:
            for delay, envelopes in by_delay.items():
                schedule(self.target, envelopes, float(delay), self.target_settings)
                if delay:
                    report.delayed += len(envelopes)
            for record in records:
                self._publish_dead_letter(queue, record)
        except BaseException:
            settle(items, ack=False)
            raise
        settle(good, ack=True)
        report.moved += len(good)
        report.possibly_twice += sum(1 for item in good if item.redelivered)
        report.malformed += len(bad)
        if dead_letters:
            return [item for item, _ in bad]
        try:
            for item, reason in bad:
                publish_dead_letter(
                    self.source, queue=queue, reason=f"not movable: {reason}", envelope=None, raw=item.body,
                    settings=self.source_settings,
                )
        except BaseException:
            settle([item for item, _ in bad], ack=False)
            raise
        settle([item for item, _ in bad], ack=True)
        return []

    def _publish_dead_letter(self, queue: str, envelope: Envelope) -> None:
        if envelope.job == DEAD_LETTER_JOB:
            self.target.publish([envelope.with_changes(queue=queue + self.target_settings.dead_letter_suffix)], 0)
        else:  # an engine's own dead letter (Dramatiq's .XQ): a record on the target
            publish_dead_letter(
                self.target, queue=queue, reason="dead letter of the source engine (no reason recorded)",
                envelope=envelope, raw=None, settings=self.target_settings,
            )

    def _depth(self, queue: str, dead_letters: bool) -> int:
        name = queue + self.source_settings.dead_letter_suffix if dead_letters else queue
        try:
            return int(self.source.depth(name))
        except Exception:
            return 0


def _read(body: bytes) -> tuple[Envelope | None, str | None]:
    item = unwrap(body)
    if item.envelope is None:
        return None, item.reason
    try:
        return decode(item.envelope), None
    except EnvelopeError as exc:
        return None, str(exc)
