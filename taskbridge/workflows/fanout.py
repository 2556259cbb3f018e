"""Chunked fan-out: one dispatcher job walks a source a chunk at a time, without a task flood.

``fan_out(send_report, source=ids(1, 2_000_000), chunk=1_000, max_depth=5_000)`` enqueues a
dispatcher. Each of its runs publishes the jobs of one chunk and enqueues the run for the next
chunk, after a fixed ``pause`` or, with ``max_depth``, once the target queue holds fewer jobs than
that (re-checked every ``recheck``, never in a busy loop). The dispatcher holds one chunk at a
time, so its memory does not depend on the source's size.

Crash safety: the fan-out's progress is a record in the coordination store (the next chunk, the
cursor after the last one, counts), advanced by compare-and-set under a lease, and each chunk has a
marker (see :mod:`.chunks`) written with its publish: ``publishing`` at an epoch before, and
``published`` after. Every run first enqueues its successor (after ``recheck``), and the run for
the next chunk is enqueued before a chunk's first publish, so a run killed anywhere is followed
by another: a run for a chunk the progress has passed does nothing; one for a later chunk takes
over the chunk a dead run left once that run's lease ran out. A chunk whose marker still says
``publishing`` is published again, whole, at the next epoch, and workers skip the jobs of the
earlier epoch, so each item of a chunk runs once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backoff import Backoff
from ..config import get_settings
from ..coordination import Coordination, get_coordination
from ..engine import get_engine
from ..envelope import EnvelopeBatch
from ..errors import ConfigurationError, EnqueueError, JobDefinitionError
from ..job import Job, job, lookup
from ..producer import Producer
from ..units import Duration, parse_duration
from .chunks import CHUNK_HEADER, MARKER_TTL, Marker, header, marker_key, read_marker
from .sources import Source, read_chunk, total_chunks

log = logging.getLogger("taskbridge.workflows")

DISPATCHER = "taskbridge.fan_out"
INDEX_KEY = "fanouts:running"
RECORD_TTL = 30 * 86400.0
"""Seconds a fan-out's progress record lives after its last change."""


@dataclass(frozen=True)
class FanOutRef:
    """A fan-out that was started: its id and how many chunks it has (None for a cursor source)."""

    id: str
    total_chunks: int | None

    def progress(self) -> dict[str, Any] | None:
        """Its progress record (see :func:`progress`)."""
        return progress(self.id)


def fan_out(
    target: Job[..., Any],
    source: Source,
    *,
    chunk: int = 1000,
    max_depth: int | None = None,
    pause: Duration | None = None,
    recheck: Duration = "1s",
    lease: Duration = "30s",
    queue: str | None = None,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
) -> FanOutRef:
    """Run ``target(item, *args, **kwargs)`` for every item of ``source`` (see
    :mod:`taskbridge.workflows.sources`), ``chunk`` items at a time.

    ``max_depth``: publish the next chunk only when the target's queue holds fewer jobs than this,
    checked every ``recheck``; ``pause``: wait this long between chunks. ``queue``: where the
    dispatcher runs (default: the target's queue). ``lease``: how long one run may take over one
    chunk before a redelivered run may take it over (after a crash)."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise EnqueueError(f"fan_out({target.name!r}): chunk must be a positive integer, got {chunk!r}")
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1):
        raise EnqueueError(f"fan_out({target.name!r}): max_depth must be a positive integer, got {max_depth!r}")
    store = get_coordination()
    engine = get_engine()
    if engine.facts.multi_process and not store.shared:
        raise ConfigurationError(
            f"fan_out({target.name!r}) keeps its progress in the coordination store, which is in-process; "
            "set TASKBRIDGE_COORDINATION_URL to a redis:// URL shared by all workers"
        )
    target.s(None, *args, **(kwargs or {}))  # the arguments must fit the job, with an item first
    settings = get_settings()
    plan: dict[str, Any] = {
        "id": os.urandom(12).hex(),
        "job": target.name,
        "queue": target.spec.resolved_queue(settings.default_queue),
        "source": source,
        "chunk": chunk,
        "max_depth": max_depth,
        "pause": 0.0 if pause is None else parse_duration(pause, what="pause"),
        "recheck": parse_duration(recheck, what="recheck"),
        "lease": parse_duration(lease, what="lease"),
        "dispatch_queue": queue,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
    }
    total = total_chunks(source, chunk)
    state: dict[str, Any] = {"next": 0, "after": None, "chunks": 0, "total": total, "items": 0, "finished": False}
    state |= {"job": target.name, "started_at": time.time(), "updated_at": time.time()}
    store.swap_record(_key(plan["id"]), None, json.dumps(state), RECORD_TTL)
    _index(store, lambda ids: [*ids, plan["id"]])
    _enqueue(plan, 0, 0.0)
    return FanOutRef(plan["id"], total)


def progress(fan_out_id: str) -> dict[str, Any] | None:
    """A fan-out's progress: ``chunks`` done of ``total`` (None for a cursor source), ``items``
    published, ``finished``, and ``eta`` in seconds when it can be estimated; None if unknown."""
    text = get_coordination().read_record(_key(fan_out_id))
    if text is None:
        return None
    state: dict[str, Any] = json.loads(text)
    done, total = state["chunks"], state["total"]
    elapsed = state["updated_at"] - state["started_at"]
    eta = None
    if total is not None and done and not state["finished"]:
        eta = elapsed / done * (total - done)
    return {**state, "id": fan_out_id, "eta": 0.0 if state["finished"] else eta}


def running() -> list[dict[str, Any]]:
    """The progress (see :func:`progress`) of every fan-out still publishing, oldest first."""
    store = get_coordination()
    text = store.read_record(INDEX_KEY)
    found = [p for p in map(progress, json.loads(text)) if p is not None] if text else []
    return [p for p in found if not p["finished"]]


def _index(store: Coordination, change: Callable[[list[str]], list[str]]) -> None:
    """Apply ``change`` to the list of running fan-outs, pruning those whose record is gone."""
    for _ in range(20):
        text = store.read_record(INDEX_KEY)
        ids = [i for i in change(json.loads(text) if text else []) if store.read_record(_key(i)) is not None]
        if store.swap_record(INDEX_KEY, text, json.dumps(ids), RECORD_TTL):
            return
    log.warning("the list of running fan-outs could not be updated (too much contention)")


@job(name=DISPATCHER, timeout=None, retry=Backoff(max_retries=10, base=1.0, cap=60.0))
def dispatch(plan: dict[str, Any], number: int) -> None:
    """One run of a fan-out's dispatcher, for chunk ``number`` (enqueued by :func:`fan_out`)."""
    store = get_coordination()
    key = _key(plan["id"])
    text = store.read_record(key)
    if text is None:
        log.warning("fan-out %s: its progress record is gone (expired?); stopping", plan["id"])
        return
    state = json.loads(text)
    if state["finished"] or state["next"] > number:
        return  # a duplicate run for a chunk already published
    # This run's successor goes out first: whatever happens to this run from here on (the queue too
    # full, the lock held, a SIGKILL), the successor comes after ``recheck``, not only once the
    # transport delivers this run's message again. Once the chunk is recorded it does nothing.
    _enqueue(plan, number, plan["recheck"])
    token = store.acquire_lock(key, plan["lease"])
    if token is None:  # the run for the chunk before is still at it, or one for this chunk is
        return
    try:
        _run_chunk(store, plan, number, key)
    finally:
        store.release_lock(key, token)


def _run_chunk(store: Coordination, plan: dict[str, Any], number: int, key: str) -> None:
    """Publish the next chunk: chunk ``number``, or the one a run before this one left when it died
    (its lease ran out); this run's successor then comes for its own chunk."""
    text = store.read_record(key)
    state = json.loads(text) if text is not None else None
    if state is None or state["finished"] or state["next"] > number:
        return
    chunk = state["next"]
    marker_text, marker = read_marker(store, plan["id"], chunk)
    if marker is None or not marker.published:
        if plan["max_depth"] is not None and get_engine().depth(plan["queue"]) >= plan["max_depth"]:
            return  # the successor checks again
        marker = _publish_chunk(store, plan, chunk, state["after"], marker_text, marker, chunk == number)
        if marker is None:
            return
    state.update(next=chunk + 1, after=marker.after, chunks=chunk + 1, finished=marker.last, updated_at=time.time())
    state["items"] += marker.items
    if not store.swap_record(key, text, json.dumps(state), RECORD_TTL):
        log.warning("fan-out %s: chunk %d was published but its progress changed meanwhile", plan["id"], chunk)
    elif marker.last:
        _index(store, lambda ids: [i for i in ids if i != plan["id"]])
    elif chunk < number:
        log.info("fan-out %s: took chunk %d over from a run that died", plan["id"], chunk)


def _publish_chunk(
    store: Coordination,
    plan: dict[str, Any],
    number: int,
    after: Any,
    marker_text: str | None,
    marker: Marker | None,
    own: bool,
) -> Marker | None:
    """Publish chunk ``number`` at the epoch after ``marker``'s, between its two marker writes;
    the published marker, or None if another run moved the marker meanwhile. ``own``: the run is
    chunk ``number``'s (not one taking it over, which comes again by itself)."""
    items, following, last = read_chunk(plan["source"], number, after, plan["chunk"])
    if own and marker is None and not last:
        _enqueue(plan, number + 1, plan["pause"])  # with a marker, the run that wrote it enqueued it
    epoch = 0 if marker is None else marker.epoch + 1
    publishing = Marker(epoch, False, len(items), following, last)
    chunk_key = marker_key(plan["id"], number)
    if not store.swap_record(chunk_key, marker_text, publishing.encode(), MARKER_TTL):
        log.warning("fan-out %s: another run took chunk %d over", plan["id"], number)
        return None
    _publish(plan, items, header(plan["id"], number, epoch))
    published = Marker(epoch, True, len(items), following, last)
    if not store.swap_record(chunk_key, publishing.encode(), published.encode(), MARKER_TTL):
        log.warning("fan-out %s: another run took chunk %d over while it was published", plan["id"], number)
        return None
    return published


def _publish(plan: dict[str, Any], items: list[Any], mark: dict[str, Any]) -> None:
    handle = lookup(plan["job"])
    if handle is None:
        raise JobDefinitionError(f"fan-out {plan['id']}: job {plan['job']!r} is not declared in this worker")
    publisher = Producer(handle.spec)
    size = publisher.settings.enqueue_batch_size
    for start in range(0, len(items), size):
        calls = [([item, *plan["args"]], plan["kwargs"]) for item in items[start : start + size]]
        publisher.send(_marked(publisher, calls, mark))


def _marked(publisher: Any, calls: list[tuple[list[Any], dict[str, Any]]], mark: dict[str, Any]) -> Sequence[Any]:
    """The envelopes of ``calls``, each carrying the chunk's ``mark``."""
    template = publisher.batch()
    if template is None:  # a unique= job: one envelope per call, twins left out
        built = (publisher.build(args, kwargs) for args, kwargs in calls)
        return [e.with_changes(headers={**e.headers, CHUNK_HEADER: mark}) for e in built if e is not None]
    batch = EnvelopeBatch(
        template.job,
        template.queue,
        enqueued_at=template.enqueued_at,
        expires_at=template.expires_at,
        not_before=template.not_before,
        headers={**template.headers, CHUNK_HEADER: mark},
    )
    for args, kwargs in calls:
        publisher.add(batch, args, kwargs)
    return batch


def _enqueue(plan: dict[str, Any], number: int, delay: float) -> None:
    dispatch.options(countdown=delay or None, queue=plan["dispatch_queue"] or plan["queue"]).enqueue(plan, number)


def _key(fan_out_id: str) -> str:
    return f"fanout:{fan_out_id}"
