"""A message whose run finished is not run again when the transport hands it out again.

SQS delivers at least once: a message can be received twice while it is invisible, or come back
after a DeleteMessage that was answered 200. Redis and RabbitMQ deliver an acknowledged message
once, but a message whose acknowledgement was lost (the worker's connection dropped between the
end of the run and the ack) comes back flagged as redelivered.

Before running a message that may be such a copy (every message on a transport whose
:attr:`~taskbridge.engine.TransportFacts.delivers_finished_again` is set, a redelivered one
elsewhere), the runner claims the delivery in the coordination store under the envelope's id and
attempt, which together name one delivery of one message (a retry is attempt + 1, a deferred copy
keeps both, so a copy of it is caught too):

- the claim is free: this delivery runs; the record says it is running (for one visibility
  timeout, after which the transport itself presumes the run lost and hands the message out again);
- the record says the run finished: the copy is acknowledged without running (``Skip`` with
  :attr:`Reason.DUPLICATE`);
- the record says it is running elsewhere: the copy neither runs nor is lost. It is republished,
  deferred until the claim runs out (``Defer`` with :attr:`Reason.DUPLICATE_RUNNING`), then
  acknowledged: if the first run finishes the copy is dropped as above, if that worker died the
  copy runs.

Once the outcome of the run is stored (republished, dead-lettered), the record says *finished*
for :data:`FINISHED_FOR` visibility timeouts (at least :data:`FINISHED_MARGIN` seconds past one),
written within :data:`FLUSH_EVERY` seconds in a batch with the other messages' (:class:`FinishedMarks`:
no round trip of its own; a copy that comes meanwhile still finds the claim and is deferred); a
deferral gives the claim back at once.

On RabbitMQ and on Celery's Redis (:attr:`~taskbridge.engine.TransportFacts.flags_lost_acks`) no
message is claimed before it runs: the finished marks are written the same way, and only a message
flagged as redelivered is looked up (and claimed) before it runs.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

from .coordination import Coordination
from .engine import TransportFacts
from .envelope import Envelope
from .errors import CoordinationError
from .outcomes import Defer, Outcome, Reason, Skip

log = logging.getLogger("taskbridge.duplicates")

FINISHED_FOR = 2.0
"""How long a finished mark is kept, in visibility timeouts: SQS hands out a message whose delete it
lost one visibility timeout after the receive, and each mark costs the store a small key."""
FINISHED_MARGIN = 300.0
"""Seconds a finished mark outlives one visibility timeout at least: a copy deferred while the run
went on comes back when the claim runs out, later on a loaded machine, and must still find it."""
RUNNING = "run"
FINISHED = "done"
FREE = "free"
_RELEASED_FOR = 0.001
"""A claim given back is a record that expires at once (the store's swap has no delete)."""
SHORTEST_DEFERRAL = 1.0
"""Seconds a copy of a running message waits at least before it is looked at again."""
LOST_ACK_WINDOW = 300.0
"""Seconds a finished mark is kept on a transport that flags a message whose acknowledgement was lost
(RabbitMQ hands it out again as soon as the connection that held it closes)."""
NEWEST_LOST_ACK_MARKS = 10_000
"""The finished marks of lost acknowledgements an in-process store keeps at most, the newest (a
shared store keeps each for :data:`LOST_ACK_WINDOW`). A worker writes one per message, which for
five minutes at thousands of messages a second would hold hundreds of MB. In one process the
newest are the ones that matter: RabbitMQ hands a message whose ack was lost out again when the
connection that held it closes, and while it is down the process finishes only the jobs it holds,
so the marks of the acks in flight are among the newest when the copies come. SQS's copies come
a visibility timeout later whatever the connection does: its marks are never dropped for room."""
FLUSH_EVERY = 0.05
"""Seconds between two writes of the finished marks gathered meanwhile; a redelivered message waits
twice that before it is looked up, so the mark of a run that just ended elsewhere is stored."""


REPLAY_HEADER = "replay"
"""Envelope header a replayed dead letter carries (a fresh token per replay): its id and attempt
are those of a run that finished, and the replay must run."""


def ends_delivery(outcome: Outcome) -> bool:
    """Whether ``outcome`` ends its delivery for good, so that a copy of it must not run: not a
    deferral (its republished copy keeps the id and attempt), nor a fan-out job superseded by a later
    copy of its chunk, which carries the same id and attempt and must run."""
    if isinstance(outcome, Defer):
        return False
    return not (isinstance(outcome, Skip) and outcome.reason == Reason.CHUNK_SUPERSEDED)


def finished_ttl(hold_for: float) -> float:
    """Seconds the finished mark of a delivery claimed for ``hold_for`` seconds is kept."""
    return max(hold_for * FINISHED_FOR, hold_for + FINISHED_MARGIN)


def record_key(envelope: Envelope) -> str:
    """The coordination record of one delivery of ``envelope``."""
    replay = envelope.headers.get(REPLAY_HEADER) if envelope.headers else None
    if replay is None:
        return f"delivery:{envelope.id}:{envelope.attempt}"
    return f"delivery:{envelope.id}:{envelope.attempt}:{replay}"


@dataclass
class DeliveryClaim:
    """One delivery's claim: taken before the run by :meth:`take`, ended by :meth:`finish` or :meth:`release`."""

    coordination: Coordination
    hold_for: float
    """Seconds the running claim lasts: the transport's visibility timeout."""
    look_after: bool = False
    """Wait for the finished marks gathered elsewhere to be written (:class:`FinishedMarks`) first."""
    envelope: Envelope | None = None
    value: str | None = None
    stopped: Outcome | None = field(default=None)
    """The outcome of a copy that must not run (``Skip`` or ``Defer``), once :meth:`take` decided it."""

    def take(self, envelope: Envelope) -> Outcome | None:
        """Claim ``envelope``'s delivery; None when this delivery runs, else the copy's outcome.
        Raises :class:`~taskbridge.errors.CoordinationError` when the store cannot be reached."""
        if self.look_after:
            time.sleep(2 * FLUSH_EVERY)
        key = record_key(envelope)
        expires = time.time() + self.hold_for
        value = f"{RUNNING}:{uuid.uuid4().hex}:{expires:.3f}"
        expected: str | None = None
        for _ in range(3):  # a record that changes between the swap and the read is read again
            if self.coordination.swap_record(key, expected, value, self.hold_for):
                self.envelope, self.value = envelope, value
                return None
            current = self.coordination.read_record(key)
            if current == FINISHED:
                log.info(
                    "job=%s id=%s attempt=%s: delivered again after it finished; not run again",
                    envelope.job,
                    envelope.id,
                    envelope.attempt,
                )
                self.stopped = Skip(envelope, Reason.DUPLICATE)
                return self.stopped
            if current is not None and current.startswith(f"{RUNNING}:"):
                wait = max(SHORTEST_DEFERRAL, _expiry(current) - time.time())
                log.info(
                    "job=%s id=%s attempt=%s: delivered again while it runs elsewhere; looked at again in %.1fs",
                    envelope.job,
                    envelope.id,
                    envelope.attempt,
                    wait,
                )
                self.stopped = Defer(envelope, wait, Reason.DUPLICATE_RUNNING)
                return self.stopped
            expected = current
        self.envelope, self.value = envelope, value  # unreachable in practice: run rather than lose it
        return None

    def finish(self, outcome: Outcome) -> None:
        """The outcome was stored: mark the delivery finished, or give the claim back when the outcome
        does not end it (:func:`ends_delivery`)."""
        if self.envelope is None or self.value is None:
            return
        if not ends_delivery(outcome):
            self.release()
            return
        envelope = self.envelope
        try:
            kept = self.coordination.swap_record(
                record_key(envelope), self.value, FINISHED, finished_ttl(self.hold_for)
            )
        except CoordinationError as exc:  # the outcome is stored; only a later copy could still run
            log.warning(
                "job=%s id=%s attempt=%s: could not mark its delivery finished (%s); a copy delivered "
                "within the next %gs may run again",
                envelope.job,
                envelope.id,
                envelope.attempt,
                exc,
                self.hold_for,
            )
            return
        if not kept:
            log.warning(
                "job=%s id=%s attempt=%s ran past its claim (the visibility timeout, %gs): a copy "
                "delivered meanwhile may have run too",
                envelope.job,
                envelope.id,
                envelope.attempt,
                self.hold_for,
            )

    def release(self) -> None:
        """Give the claim back: the run was deferred, or no outcome could be decided and the message
        goes back unacknowledged. A claim that cannot be given back runs out by itself."""
        if self.envelope is None or self.value is None:
            return
        with contextlib.suppress(CoordinationError):
            self.coordination.swap_record(record_key(self.envelope), self.value, FREE, _RELEASED_FOR)


def _expiry(value: str) -> float:
    try:
        return float(value.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0.0


_starting = threading.Lock()


def _renew_starting() -> None:
    global _starting
    _starting = threading.Lock()


os.register_at_fork(after_in_child=_renew_starting)


def finished_marks_for(
    facts: TransportFacts, coordination: Coordination, visibility_timeout: float
) -> FinishedMarks | None:
    """The finished marks a runner on a transport with ``facts`` keeps, or None when it keeps none."""
    if facts.delivers_finished_again:
        return FinishedMarks(coordination, finished_ttl(visibility_timeout))
    if facts.flags_lost_acks:
        return FinishedMarks(coordination, LOST_ACK_WINDOW, newest=NEWEST_LOST_ACK_MARKS)
    return None


_ALL_MARKS: weakref.WeakSet[FinishedMarks] = weakref.WeakSet()
"""Every :class:`FinishedMarks` of this process, for :func:`flush_finished_marks`."""


def flush_finished_marks() -> None:
    """Write now every finished mark this process gathered and has not written yet. For a process
    that ends without running ``atexit`` handlers (a Celery pool child, a multiprocessing child):
    the engine calls it as the process stops."""
    for marks in list(_ALL_MARKS):
        if marks._pid == os.getpid():
            marks.flush()


class FinishedMarks:
    """The finished marks of the messages this process ran, written in one round trip every
    :data:`FLUSH_EVERY` seconds from a daemon thread, so that a message costs its worker no round
    trip of its own. Hand-written rather than a library's: a list swapped under a lock and one
    thread per process is all it needs."""

    def __init__(self, coordination: Coordination, ttl: float = LOST_ACK_WINDOW, *, newest: int | None = None) -> None:
        self.coordination = coordination
        self.ttl = ttl
        self.newest = newest
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._pid: int | None = None  # the process whose thread writes them (a forked child starts its own)
        _ALL_MARKS.add(self)

    def add(self, envelope: Envelope) -> None:
        """Mark ``envelope``'s delivery finished, within :data:`FLUSH_EVERY` seconds."""
        key = record_key(envelope)
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._pending.append(key)

    def _start(self) -> None:
        with _starting:
            if self._pid == os.getpid():
                return
            # A lock or marks copied from the parent process are the parent's.
            self._lock, self._pending = threading.Lock(), []
            threading.Thread(target=self._write_forever, name="taskbridge-finished-marks", daemon=True).start()
            self._pid = os.getpid()

    def flush(self) -> None:
        """Write the marks gathered so far."""
        with self._lock:
            keys, self._pending = self._pending, []
        if not keys:
            return
        try:
            self.coordination.write_records(keys, FINISHED, self.ttl, newest=self.newest)
        except CoordinationError as exc:
            log.warning(
                "%d finished marks not written (%s); those messages run again if delivered again", len(keys), exc
            )

    def _write_forever(self) -> None:
        atexit.register(self.flush)
        while True:
            time.sleep(FLUSH_EVERY)
            self.flush()
