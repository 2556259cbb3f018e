"""Moving a backlog from one engine x transport to another without running it.

Items are taken from the source with :meth:`Engine.take`, read with :func:`taskbridge.wire.unwrap`,
published to the target through :func:`taskbridge.dispatch.schedule` (so a remaining delay longer
than the target transport holds hops like any other), and acknowledged at the source only after
the target's ``publish`` returned, which means stored (publisher confirms or a transaction on
RabbitMQ, the reply on Redis and SQS). A few batches are in flight at a time (one publishing, a
couple read ahead), so memory stays bounded whatever the backlog.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import Empty, Full, Queue
from typing import Any, cast

from .config import Settings
from .dispatch import DEAD_LETTER_JOB, publish, publish_dead_letter, schedule
from .engine import Engine, Taken, legacy_holdings, settle
from .envelope import Envelope, decode
from .errors import EnvelopeError
from .wire import unwrap

DEFAULT_BATCH = 500
SAME_QUEUE_NOTE = (
    "stopped: jobs already moved came back at the source, so source and target are one queue "
    "(both engines read it; nothing more to move)"
)
IN_FLIGHT = 2
"""Batches read ahead of the one being published: memory holds at most a few batches."""
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
    seconds: float = 0.0
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
    legacy: bool = False
    """Move what plain producers left in each queue's legacy queue outside the layout (the source
    engine's ``legacy_holdings``: dramatiq-sqs's ``<namespace>_<queue>``) instead of the queue's."""

    def move(
        self, queues: Sequence[str], *, dead_letters: bool = False, progress: Progress | None = None
    ) -> list[QueueReport]:
        """Move every waiting item (or every dead letter) of ``queues``; one report per queue."""
        return [self.move_queue(queue, dead_letters=dead_letters, progress=progress) for queue in queues]

    def move_queue(self, queue: str, *, dead_letters: bool = False, progress: Progress | None = None) -> QueueReport:
        """Move one queue. A reader thread takes and reads batches while this thread publishes the one
        before; every call on the source (take, acknowledge, release) is made by the reader, so a
        transport client that is not thread-safe (pika, py-amqp) is never shared."""
        report = QueueReport(queue)
        started = time.monotonic()
        reader = _Reader(self, queue, dead_letters, report)
        thread = threading.Thread(target=reader.run, name=f"taskbridge-move-{queue}", daemon=True)
        thread.start()
        try:
            while (batch := reader.ready.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                groups = batch.groups()
                for index, (delay, envelopes, items) in enumerate(groups):
                    try:
                        self._publish(queue, delay, envelopes, dead_letters)
                    except BaseException:
                        reader.settle([item for _, _, rest in groups[index:] for item in rest], ack=False)
                        raise
                    reader.settle(items, ack=True)  # stored by the target: gone from the source
                    report.moved += len(items)
                    report.delayed += len(items) if delay else 0
                    report.possibly_twice += sum(1 for item in items if item.redelivered)
                if progress is not None:
                    progress(queue, batch.size)
        finally:
            reader.finish()
            thread.join()
        if reader.error is not None:
            raise reader.error
        report.seconds = round(time.monotonic() - started, 3)
        report.left = self._depth(queue, dead_letters)
        return report

    def _publish(self, queue: str, delay: int, envelopes: list[Envelope], dead_letters: bool) -> None:
        if not dead_letters:
            schedule(self.target, envelopes, float(delay), self.target_settings)
            return
        suffix = self.target_settings.dead_letter_suffix
        records = [e.with_changes(queue=queue + suffix) for e in envelopes if e.job == DEAD_LETTER_JOB]
        publish(self.target, records, 0, self.target_settings)
        for envelope in envelopes:
            if envelope.job != DEAD_LETTER_JOB:  # an engine's own dead letter (Dramatiq's .XQ)
                publish_dead_letter(
                    self.target,
                    queue=queue,
                    reason="dead letter of the source engine (no reason recorded)",
                    envelope=envelope,
                    raw=None,
                    settings=self.target_settings,
                )

    def _read_batch(self, items: list[Taken], dead_letters: bool) -> tuple[_Batch, list[tuple[Taken, str]]]:
        """The batch to publish, and the malformed items (no envelope) apart."""
        now = time.time()
        batch = _Batch(size=len(items))
        ids = batch.ids
        bad: list[tuple[Taken, str]] = []
        for item in items:
            envelope, reason = _read(item.body)
            if envelope is None:
                bad.append((item, reason or "no envelope"))
                continue
            ids.add(envelope.id)
            remaining = 0.0 if dead_letters else (envelope.not_before or 0.0) - now
            # Whole seconds, rounded up: one publish per second of delay, never earlier than due.
            group = batch.by_delay.setdefault(math.ceil(remaining) if remaining > 0 else 0, ([], []))
            group[0].append(envelope)
            group[1].append(item)
        return batch, bad

    def _dead_letter_at_source(self, queue: str, bad: list[tuple[Taken, str]]) -> None:
        """Malformed waiting items go to the queue's dead letters at the source, then leave the queue."""
        try:
            for item, reason in bad:
                publish_dead_letter(
                    self.source,
                    queue=queue,
                    reason=f"not movable: {reason}",
                    envelope=None,
                    raw=item.body,
                    settings=self.source_settings,
                )
        except BaseException:
            settle([item for item, _ in bad], ack=False)
            raise
        settle([item for item, _ in bad], ack=True)

    def take(self, queue: str, dead_letters: bool) -> list[Taken]:
        """The next batch of items at the source (called by the reader thread only)."""
        if self.legacy:
            taking: Any = self.source  # an engine with legacy queues takes from them on request
            return cast("list[Taken]", taking.take(queue, self.batch, legacy=True))
        return self.source.take(queue, self.batch, dead_letters=dead_letters)

    def waiting(self, queue: str, dead_letters: bool) -> int:
        """Items waiting at the source to be moved (approximate on SQS)."""
        if self.legacy:
            return sum(legacy_holdings(self.source, queue).values())
        return int(self.source.depth(queue + self.source_settings.dead_letter_suffix if dead_letters else queue))

    def _depth(self, queue: str, dead_letters: bool) -> int:
        try:
            return self.waiting(queue, dead_letters)
        except Exception:
            return 0


@dataclass
class _Batch:
    """Read items of one take, ready to publish."""

    size: int
    ids: set[str] = field(default_factory=set)
    by_delay: dict[int, tuple[list[Envelope], list[Taken]]] = field(default_factory=dict)
    """Whole seconds of delay left -> the envelopes to publish with it and the items they came from."""

    def groups(self) -> list[tuple[int, list[Envelope], list[Taken]]]:
        return [(delay, envelopes, items) for delay, (envelopes, items) in self.by_delay.items()]

    @property
    def good(self) -> list[Taken]:
        return [item for _, items in self.by_delay.values() for item in items]


_DONE = object()


class _Reader:
    """Takes and reads batches of one queue for a :class:`Mover`, and settles them when told to.

    Hand-written with two ``queue.Queue`` because every source call must stay on this one thread.
    """

    def __init__(self, mover: Mover, queue: str, dead_letters: bool, report: QueueReport) -> None:
        self.mover = mover
        self.queue = queue
        self.dead_letters = dead_letters
        self.report = report
        self.ready: Queue[_Batch | BaseException | None] = Queue(maxsize=IN_FLIGHT)
        self._settle: Queue[tuple[list[Taken], bool] | object] = Queue()
        self._stop = threading.Event()
        self._held: list[Taken] = []
        self._first_ids: set[str] | None = None
        self.error: BaseException | None = None

    def settle(self, items: list[Taken], *, ack: bool) -> None:
        """Ask the reader thread to acknowledge (or release) items."""
        self._settle.put((items, ack))

    def finish(self) -> None:
        """(Publishing thread) Nothing more will be published: give back what was not, and stop the reader."""
        self._stop.set()
        while True:
            try:
                batch = self.ready.get_nowait()
            except Empty:
                break
            if isinstance(batch, _Batch):
                self.settle(batch.good, ack=False)
        self._settle.put(_DONE)

    def run(self) -> None:
        try:
            self._take_all()
        except BaseException as exc:
            self.ready.put(exc)
        try:
            self._settle_until_done()
        except BaseException as exc:
            self.error = exc
        finally:
            settle(self._held, ack=False)

    def _take_all(self) -> None:
        while not self._stop.is_set():
            self._settle_waiting()
            items = self.mover.take(self.queue, self.dead_letters)
            if not items:
                self.ready.put(None)
                return
            batch, bad = self.mover._read_batch(items, self.dead_letters)
            if self._first_ids is None:
                self._first_ids = batch.ids
            elif self._first_ids & batch.ids:
                # The jobs moved first are back at the source: the target wrote them into the queue
                # they came from (both engines share this transport's queue), so going on would loop.
                settle(items, ack=False)
                self.report.note = SAME_QUEUE_NOTE
                self.ready.put(None)
                return
            self.report.malformed += len(bad)
            if self.dead_letters:
                self._held.extend(item for item, _ in bad)  # left in place: released at the end
                if len(self._held) >= MAX_HELD_MALFORMED:
                    self.report.note = f"stopped early: {len(self._held)} malformed dead letters are in the way"
                    self._stop.set()
            elif bad:
                self.mover._dead_letter_at_source(self.queue, bad)
            if not self._hand_over(batch):
                settle(batch.good, ack=False)
                return
        self.ready.put(None)

    def _hand_over(self, batch: _Batch) -> bool:
        while not self._stop.is_set():
            self._settle_waiting()
            try:
                self.ready.put(batch, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def _settle_waiting(self) -> None:
        while True:
            try:
                request = self._settle.get_nowait()
            except Empty:
                return
            if request is _DONE:
                self._settle.put(_DONE)  # seen again by _settle_until_done
                return
            self._apply(request)

    def _settle_until_done(self) -> None:
        while (request := self._settle.get()) is not _DONE:
            self._apply(request)
        while True:  # a batch handed over after the publishing thread stopped looking
            try:
                batch = self.ready.get_nowait()
            except Empty:
                return
            if isinstance(batch, _Batch):
                settle(batch.good, ack=False)

    @staticmethod
    def _apply(request: object) -> None:
        items, ack = cast("tuple[list[Taken], bool]", request)
        settle(items, ack=ack)


def _read(body: bytes) -> tuple[Envelope | None, str | None]:
    item = unwrap(body)
    if item.payload is None:
        return None, item.reason
    try:
        return decode(item.payload), None
    except EnvelopeError as exc:
        return None, str(exc)
