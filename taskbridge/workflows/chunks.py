"""Chunk markers: each fan-out chunk's jobs run once, even when a killed dispatcher publishes it again.

Before a dispatcher publishes chunk ``n`` it writes the chunk's marker, ``publishing`` with an
epoch (0, then one more for each new attempt at the chunk), by compare-and-set; when the publish
returned it moves the marker to ``published``. Every job of the chunk carries the fan-out id, the
chunk number and the epoch in ``headers["chunk"]``, and a worker runs it only if its epoch is the
one the marker says was published:

- marker ``published`` at the job's epoch: it runs;
- marker ``published``, or ``publishing``, at a later epoch: a copy from a publish that was cut
  short and redone; it is skipped, without running;
- marker ``publishing`` at the job's epoch: the publish has not returned yet; the worker waits for
  it a moment, then defers the job (the dispatcher may have died; the run that takes over moves
  the marker on, settling the copies). Once such a wait ran out, the worker defers the chunk's
  other jobs without waiting for a while, so the copies of a dead publish do not hold it up.

A dispatcher killed at any point leaves the marker absent (nothing was published), ``publishing``
(some of the chunk may be out: the next run publishes it whole at the next epoch) or
``published`` (the next run only records the progress). A published marker never changes again,
so a worker remembers it.

A group's callback goes out the same way (:func:`publish_once`), as the one-job chunk 0 of
``group-<id>``: the member whose end completes the group, or a redelivery of it after a crash,
publishes it, and it runs once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..coordination import Coordination
from ..envelope import Envelope
from ..outcomes import Defer, Outcome, Reason, Skip

log = logging.getLogger("taskbridge.workflows")

CHUNK_HEADER = "chunk"
MARKER_TTL = 30 * 86400.0
"""Seconds a chunk's marker lives: as long as its jobs may still wait in a queue."""
PUBLISH_WAIT = 2.0
"""Seconds a worker waits for the publish of its job's chunk to return before deferring the job."""
RECHECK = 2.0
"""Seconds a job whose chunk is still being published is deferred by."""
SUPERSEDED = Reason.CHUNK_SUPERSEDED

_published: dict[tuple[str, int], int] = {}
"""(fan-out id, chunk) -> the published epoch; final once written, so kept per process."""
_stalled: dict[tuple[str, int, int], float] = {}
"""(fan-out id, chunk, epoch) -> when a wait for its publish last ran out (monotonic): the jobs of a
chunk whose dispatcher died are deferred at once for a while, not each after a wait."""
STALL_MEMORY = 10.0
_REMEMBERED = 100_000


@dataclass(frozen=True)
class Marker:
    """A chunk's marker: its epoch, whether that epoch's publish returned, and what the chunk was."""

    epoch: int
    published: bool
    items: int = 0
    after: Any = None
    last: bool = False

    def encode(self) -> str:
        """The marker as stored in the coordination store."""
        return json.dumps(asdict(self))


def marker_key(fan_out_id: str, number: int) -> str:
    """The record holding chunk ``number``'s marker."""
    return f"fanout:{fan_out_id}:chunk:{number}"


def read_marker(store: Coordination, fan_out_id: str, number: int) -> tuple[str | None, Marker | None]:
    """The stored text of a chunk's marker (for a compare-and-set) and the marker; None if absent."""
    text = store.read_record(marker_key(fan_out_id, number))
    if text is None:
        return None, None
    return text, Marker(**json.loads(text))


def publish_once(store: Coordination, owner: str, publish: Callable[[dict[str, Any]], None], ttl: float) -> None:
    """Publish the one-job chunk 0 of ``owner`` by ``publish(header)`` between its marker writes,
    unless a caller before did; a caller cut short before the ``published`` write is followed by
    one that publishes again at the next epoch, and only the last epoch's job runs."""
    text, marker = read_marker(store, owner, 0)
    if marker is not None and marker.published:
        return
    epoch = 0 if marker is None else marker.epoch + 1
    publishing = Marker(epoch, False, 1)
    key = marker_key(owner, 0)
    if not store.swap_record(key, text, publishing.encode(), ttl):
        log.info("%s: another caller is publishing it", owner)
        return
    publish(header(owner, 0, epoch))
    if not store.swap_record(key, publishing.encode(), Marker(epoch, True, 1).encode(), ttl):
        log.info("%s: another caller published it again meanwhile", owner)


def header(fan_out_id: str, number: int, epoch: int) -> dict[str, Any]:
    """What each job of a chunk carries in ``headers["fan_out"]``."""
    return {"id": fan_out_id, "chunk": number, "epoch": epoch}


def held_back(envelope: Envelope, store: Coordination) -> Outcome | None:
    """For a job of a fan-out chunk: a :class:`Skip` if it is a superseded copy, a :class:`Defer` if
    its chunk's publish has not returned yet; None when it may run (any other job: at once).
    Raises :class:`~taskbridge.errors.CoordinationError` when the store cannot tell."""
    mark = envelope.headers.get(CHUNK_HEADER)
    if not isinstance(mark, dict):
        return None
    fan_out_id, number, epoch = mark.get("id"), mark.get("chunk"), mark.get("epoch")
    if not isinstance(fan_out_id, str) or not isinstance(number, int) or not isinstance(epoch, int):
        return None
    published = _published.get((fan_out_id, number))
    stalled = (fan_out_id, number, epoch)
    wait = 0.0 if time.monotonic() - _stalled.get(stalled, -STALL_MEMORY) < STALL_MEMORY else PUBLISH_WAIT
    deadline = time.monotonic() + wait
    pause = 0.02
    while published is None:
        _, marker = read_marker(store, fan_out_id, number)
        if marker is None:
            log.warning("job %s: fan-out %s chunk %d has no marker (expired?)", envelope.job, fan_out_id, number)
            return None
        if marker.published:
            if len(_published) >= _REMEMBERED:
                _published.clear()
            published = _published[(fan_out_id, number)] = marker.epoch
        elif marker.epoch > epoch:
            return Skip(envelope, SUPERSEDED)
        elif time.monotonic() >= deadline:
            if len(_stalled) >= _REMEMBERED:
                _stalled.clear()
            _stalled[stalled] = time.monotonic()
            return Defer(envelope, RECHECK, Reason.CHUNK_PUBLISHING)
        else:
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
    return None if published == epoch else Skip(envelope, SUPERSEDED)
