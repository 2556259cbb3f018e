"""Enqueueing: argument checks, envelope building, uniqueness, size limits, delay hops, batches."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .config import Settings, get_settings
from .engine import Engine, get_engine
from .envelope import Envelope, check_json_arguments
from .errors import ConfigurationError, EnqueueError
from .job import JobCall, JobSpec, _Default
from .units import parse_duration

if TYPE_CHECKING:
    from .coordination import Coordination

log = logging.getLogger("taskbridge.publish")

DEAD_LETTER_JOB = "taskbridge.dead_letter"


def max_delay(engine: Engine, settings: Settings) -> float:
    """The longest delay handed to the transport; anything longer hops through the core."""
    cap = engine.facts.max_native_delay
    if settings.max_native_delay is not None:
        cap = min(cap, settings.max_native_delay)
    return max(cap, 0.0)


def schedule(engine: Engine, envelopes: Sequence[Envelope], delay: float, settings: Settings | None = None) -> None:
    """Publish ``envelopes`` to run after ``delay`` seconds, hopping when the transport cannot hold it."""
    if not envelopes:
        return
    if delay <= 0:
        engine.publish(envelopes, 0)
        return
    settings = settings or get_settings()
    due = time.time() + delay
    stamped = [e.with_changes(not_before=due) for e in envelopes]
    engine.publish(stamped, min(delay, max_delay(engine, settings)))


def dead_letter_queue(queue: str, settings: Settings | None = None) -> str:
    return queue + (settings or get_settings()).dead_letter_suffix


def publish_dead_letter(
    engine: Engine,
    *,
    queue: str,
    reason: str,
    envelope: Envelope | None,
    raw: str | None,
    settings: Settings | None = None,
) -> None:
    """Write a message that cannot run to ``<queue><dead_letter_suffix>`` with the reason and its body."""
    settings = settings or get_settings()
    body = raw if raw is not None else (envelope.encode() if envelope else "")
    record = Envelope(
        job=DEAD_LETTER_JOB,
        queue=dead_letter_queue(queue, settings),
        headers={
            "reason": reason,
            "job": envelope.job if envelope else None,
            "id": envelope.id if envelope else None,
            "attempt": envelope.attempt if envelope else None,
            "body": body,
        },
    )
    engine.publish([record], 0)


def _countdown(call: JobCall) -> float:
    seconds = 0.0
    if call.countdown is not None:
        try:
            seconds = parse_duration(call.countdown, what="countdown")
        except ValueError as exc:
            raise EnqueueError(f"job {call.job.name!r}: {exc}") from None
    if call.eta is not None:
        eta = call.eta
        if isinstance(eta, dt.datetime):
            if eta.tzinfo is None:
                raise EnqueueError(f"job {call.job.name!r}: eta= must be timezone-aware, got {eta!r}")
            eta = eta.timestamp()
        if not isinstance(eta, int | float) or isinstance(eta, bool):
            raise EnqueueError(f"job {call.job.name!r}: eta= must be a datetime or a UNIX timestamp, got {eta!r}")
        seconds = max(seconds, float(eta) - time.time())
    return max(seconds, 0.0)


def _expires(call: JobCall, settings: Settings) -> float | None:
    if isinstance(call.expires, _Default):
        return call.job.spec.resolved_expires(settings.default_expires)
    if call.expires is None:
        return None
    try:
        return parse_duration(call.expires, what="expires")
    except ValueError as exc:
        raise EnqueueError(f"job {call.job.name!r}: {exc}") from None


def unique_key(spec: JobSpec, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """The uniqueness key of one call: the rendered template, or a digest of the arguments."""
    if spec.unique:
        return f"unique:{spec.name}:{spec.render_key(spec.unique, spec.bind(args, kwargs))}"
    digest = hashlib.sha1(json.dumps([list(args), kwargs], sort_keys=True).encode()).hexdigest()
    return f"unique:{spec.name}:{digest}"


class _Publisher:
    """Builds and checks envelopes for one JobCall; shared by single and batched enqueue."""

    def __init__(self, call: JobCall) -> None:
        self.call = call
        self.spec = call.job.spec
        self.settings = get_settings()
        self.engine = get_engine()
        self.queue = call.queue or self.spec.resolved_queue(self.settings.default_queue)
        self.delay = _countdown(call)
        self.expires = _expires(call, self.settings)
        self.coordination: Coordination | None = None
        if self.spec.unique is not None:
            from .coordination import get_coordination

            self.coordination = get_coordination()
            if self.engine.facts.multi_process and not self.coordination.shared:
                raise ConfigurationError(
                    f"job {self.spec.name!r} uses unique= but the coordination store is in-process; "
                    "set TASKBRIDGE_COORDINATION_URL to a redis:// URL shared by all workers"
                )

    def build(
        self, args: Sequence[Any], kwargs: dict[str, Any], chain: list[dict[str, Any]] | None = None
    ) -> Envelope | None:
        name = self.spec.name
        check_json_arguments(name, args, kwargs)
        try:
            self.spec.bind(args, kwargs)
        except TypeError as exc:
            raise EnqueueError(
                f"job {name!r}: arguments do not match {self.spec.func.__qualname__}{self.spec.signature}: {exc}"
            ) from None
        now = time.time()
        due = now + self.delay
        headers: dict[str, Any] = {}
        if self.coordination is not None:
            key = unique_key(self.spec, args, kwargs)
            ttl = self.spec.unique_ttl or (self.delay + (self.expires or 3600.0))
            if not self.coordination.claim_unique(key, math.ceil(ttl)):
                log.info("job %s: not enqueued, %s is already pending", name, key)
                return None
            headers["unique"] = key
        envelope = Envelope(
            job=name,
            queue=self.queue,
            args=list(args),
            kwargs=dict(kwargs),
            enqueued_at=now,
            expires_at=None if self.expires is None else due + self.expires,
            chain=list(chain or []),
            headers=headers,
        )
        size = len(envelope.encode().encode("utf-8"))
        if size > self.engine.facts.max_message_size:
            if self.coordination is not None:
                self.coordination.release_unique(headers["unique"])
            raise EnqueueError(
                f"job {name!r}: the message is {size} bytes, over the {self.engine.facts.max_message_size}-byte "
                f"limit of the {self.engine.name} transport; pass a reference (an id, a URL) instead of the data"
            )
        return envelope

    def send(self, envelopes: Sequence[Envelope]) -> None:
        schedule(self.engine, envelopes, self.delay, self.settings)


def enqueue_one(
    call: JobCall, args: Sequence[Any], kwargs: dict[str, Any], *, chain: list[dict[str, Any]] | None = None
) -> Envelope | None:
    """Check, build and publish one envelope; None if a ``unique`` twin is already pending."""
    publisher = _Publisher(call)
    envelope = publisher.build(args, kwargs, chain)
    if envelope is not None:
        publisher.send([envelope])
    return envelope


def _split_call(job: str, item: Any) -> tuple[Sequence[Any], dict[str, Any]]:
    if isinstance(item, dict):
        return (), item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], list | tuple) and isinstance(item[1], dict):
        return item[0], item[1]
    if isinstance(item, list | tuple):
        return item, {}
    raise EnqueueError(
        f"job {job!r}: enqueue_many items must be a kwargs dict, an args tuple or (args, kwargs); got {item!r}"
    )


def enqueue_batches(call: JobCall, calls: Iterable[Any], *, batch_size: int | None = None) -> int:
    """Publish many calls in batches of ``batch_size``; memory is bounded by one batch."""
    publisher = _Publisher(call)
    size = batch_size or publisher.settings.enqueue_batch_size
    if size < 1:
        raise EnqueueError(f"job {call.job.name!r}: batch_size must be at least 1")
    total = 0
    iterator = iter(calls)
    while chunk := list(itertools.islice(iterator, size)):
        batch = [
            envelope
            for envelope in (publisher.build(*_split_call(call.job.name, item)) for item in chunk)
            if envelope is not None
        ]
        publisher.send(batch)
        total += len(batch)
    return total
