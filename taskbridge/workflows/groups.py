"""Groups with a callback (fan-in): ``group(a.s(i) for i in ids).then(notify.s()).enqueue()``.

Each member carries ``headers["group"]`` (the group id and the callback step). When a member ends
for good (done, dead, expired or skipped), the worker records it once in a counter in the
coordination store; the member whose record completes the sealed total publishes the callback,
with the counts as its first argument. No worker waits for the group.

Exactly once: a worker that cannot reach the store or the broker retries in place, holding the
member's message; a worker that dies first leaves the message to be redelivered, and the store
answers the redelivery of the member that completed the group with the counts again. The
callback is published between two marker writes (see :mod:`.chunks`), so a callback published
twice that way runs once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import carrying
from ..chains import check_length, step_of
from ..config import get_settings
from ..coordination import Coordination, get_coordination
from ..engine import get_engine
from ..envelope import TAKES_RESULT, Envelope
from ..errors import ConfigurationError, EnqueueError, JobDefinitionError
from ..job import Signature, lookup
from ..outcomes import Dead, Done, Expired, Outcome, Skip
from ..producer import Producer
from .chunks import CHUNK_HEADER, publish_once

log = logging.getLogger("taskbridge.workflows")

GROUP_HEADER = "group"
GROUP_TTL = 7 * 86400.0
"""Seconds a group's counter lives in the coordination store after its last change."""

_ENDINGS: dict[type, str] = {Done: "done", Dead: "dead", Expired: "expired", Skip: "skipped"}


@dataclass(frozen=True)
class GroupRef:
    """A group that was enqueued: its id and how many members it has."""

    id: str
    total: int


@dataclass
class Group:
    """Jobs that run in parallel; with :meth:`then`, a callback runs once when all have ended."""

    members: Iterable[Signature]
    callback: Signature | None = None
    batch_size: int | None = None
    _used: bool = field(default=False, repr=False)

    def then(self, callback: Signature) -> Group:
        """Run ``callback`` once every member has ended (done or dead). Unless made with ``.si()``
        it receives ``{"total", "done", "dead", "expired", "skipped"}`` as its first argument."""
        return Group(self.members, callback, self.batch_size)

    def enqueue(self) -> GroupRef:
        """Publish the members in batches (memory bounded by the batch size, so a generator of
        100,000 signatures is fine), then seal the group with its total."""
        if self._used:
            raise EnqueueError("this group was already enqueued; its members were consumed")
        self._used = True
        group_id = os.urandom(16).hex()
        store: Coordination | None = None
        header: dict[str, Any] | None = None
        if self.callback is not None:
            check_length(self.callback)
            _handle(self.callback.job)
            store = get_coordination()
            if get_engine().facts.multi_process and not store.shared:
                raise ConfigurationError(
                    "group(...).then(...) counts finished members in the coordination store, which is "
                    "in-process; set TASKBRIDGE_COORDINATION_URL to a redis:// URL shared by all workers"
                )
            header = {"id": group_id, "then": {**step_of(self.callback), "chain": self.callback.chain}}
        total = _publish_members(self.members, header, self.batch_size or get_settings().enqueue_batch_size)
        if store is not None and header is not None:
            counts = store.group_seal(group_id, total, GROUP_TTL)
            if counts is not None:
                _enqueue_callback(store, group_id, header["then"], counts)
        return GroupRef(group_id, total)


def group(members: Iterable[Signature], *, batch_size: int | None = None) -> Group:
    """A group of signatures (each a single job, not a chain) to run in parallel."""
    return Group(members, batch_size=batch_size)


def _handle(name: str) -> Any:
    handle = lookup(name)
    if handle is None:
        raise JobDefinitionError(f"job {name!r} is not declared in this process; import its module first")
    return handle


def _publish_members(members: Iterable[Signature], header: dict[str, Any] | None, size: int) -> int:
    publishers: dict[str, Producer] = {}
    batches: dict[str, list[Envelope]] = {}
    total = 0
    for member in members:
        if member.chain:
            raise EnqueueError(f"group member {member.job!r} is a chain; a group's members are single jobs")
        publisher = publishers.get(member.job)
        if publisher is None:
            publisher = publishers[member.job] = Producer(_handle(member.job).spec)
        envelope = publisher.build(member.args, member.kwargs)
        if envelope is None:
            continue  # a unique= twin is pending
        if header is not None:
            envelope = envelope.with_changes(headers={**envelope.headers, GROUP_HEADER: header})
        batch = batches.setdefault(member.job, [])
        batch.append(envelope)
        total += 1
        if len(batch) >= size:
            publisher.send(batch)
            batches[member.job] = []
    for name, batch in batches.items():
        publishers[name].send(batch)
    return total


def member_ended(outcome: Outcome, store: Coordination) -> None:
    """Record a member's final outcome; publish the callback if it was the last one to end.

    A failure to reach the store or the broker is retried in place, the worker holding the
    member's message (see :mod:`taskbridge.carrying`); only a callback that cannot be enqueued at
    all (its job is not declared here, its arguments do not fit) is given up, with an error."""
    envelope = outcome.envelope
    ending = _ENDINGS.get(type(outcome))
    if envelope is None or ending is None:
        return
    header = envelope.headers.get(GROUP_HEADER)
    if not isinstance(header, dict) or not isinstance(header.get("id"), str):
        return

    def record() -> None:
        counts = store.group_record(header["id"], envelope.id, ending, GROUP_TTL)
        if counts is None:
            return
        try:
            _enqueue_callback(store, header["id"], header["then"], counts)
        except (EnqueueError, JobDefinitionError) as exc:  # no retry can fix these
            log.error("group %s ended but its callback cannot be enqueued: %s", header["id"], exc)

    carrying.store(record, outcome, envelope.queue, get_settings())


def _enqueue_callback(store: Coordination, group_id: str, step: dict[str, Any], counts: dict[str, int]) -> None:
    """Publish the callback with the counts, once (see :func:`.chunks.publish_once`)."""
    args = list(step.get("args", ()))
    if step.get(TAKES_RESULT) is True:
        args.insert(0, counts)
    chain = list(step.get("chain", ()))
    publisher = Producer(_handle(step["job"]).spec)

    def publish(mark: dict[str, Any]) -> None:
        envelope = publisher.build(args, dict(step.get("kwargs", {})), chain)
        if envelope is not None:
            publisher.send([envelope.with_changes(headers={**envelope.headers, CHUNK_HEADER: mark})])

    publish_once(store, f"group-{group_id}", publish, GROUP_TTL)
