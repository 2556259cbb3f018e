"""The producer: checks a job's call, builds its envelope (uniqueness, size limit, tracking) and
hands it to :mod:`taskbridge.dispatch`; one call, or many in bounded batches."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import events
from .config import Settings, get_settings
from .coordination import Coordination, get_coordination
from .dispatch import schedule, start_schedule
from .engine import already_stored, get_engine
from .envelope import (
    Envelope,
    EnvelopeBatch,
    check_json_arguments,
    encode_json,
    is_queue_name,
    json_arguments,
    scalar_args_texts,
)
from .errors import ConfigurationError, EnqueueError
from .handles import JobRef
from .policies import with_hook
from .policies.base import EnqueueCall, Policy
from .signing import overhead
from .spec import DEFAULT, JobSpec, _Default
from .tracking import HEADER as TRACK_HEADER
from .tracking import get_tracker, plan_for
from .transports import queue_name_problem
from .units import Duration, parse_duration

log = logging.getLogger("taskbridge.publish")


@dataclass(frozen=True)
class CallOptions:
    """Per-call options of one enqueue (``job.options(countdown=60)``)."""

    countdown: Duration | None = None
    eta: Any = None
    queue: str | None = None
    expires: Duration | _Default | None = DEFAULT


PLAIN = CallOptions()
"""No per-call option: the job's own settings."""

_NO_KWARGS: dict[str, Any] = {}
"""The keyword arguments of an ``enqueue_many`` item that is an args tuple (never changed)."""


def _countdown(spec: JobSpec, call: CallOptions) -> float:
    seconds = 0.0
    if call.countdown is not None:
        try:
            seconds = parse_duration(call.countdown, what="countdown")
        except ValueError as exc:
            raise EnqueueError(f"job {spec.name!r}: {exc}") from None
    if call.eta is not None:
        eta = call.eta
        if isinstance(eta, dt.datetime):
            if eta.tzinfo is None:
                raise EnqueueError(f"job {spec.name!r}: eta= must be timezone-aware, got {eta!r}")
            eta = eta.timestamp()
        if not isinstance(eta, int | float) or isinstance(eta, bool):
            raise EnqueueError(f"job {spec.name!r}: eta= must be a datetime or a UNIX timestamp, got {eta!r}")
        seconds = max(seconds, float(eta) - time.time())
    return max(seconds, 0.0)


def _expires(spec: JobSpec, call: CallOptions, settings: Settings) -> float | None:
    if isinstance(call.expires, _Default):
        return spec.resolved_expires(settings.default_expires)
    if call.expires is None:
        return None
    try:
        return parse_duration(call.expires, what="expires")
    except ValueError as exc:
        raise EnqueueError(f"job {spec.name!r}: {exc}") from None


class Producer:
    """Builds and checks envelopes for one job with one set of call options; shared by single and
    batched enqueue."""

    def __init__(self, spec: JobSpec, call: CallOptions = PLAIN) -> None:
        self.call = call
        self.spec = spec
        self.settings = get_settings()
        self.engine = get_engine()
        if call.queue is not None and not is_queue_name(call.queue):
            raise EnqueueError(
                f"job {self.spec.name!r}: queue= must be letters, digits, '-', '_' or '.', got {call.queue!r}"
            )
        self.queue = call.queue or self.spec.resolved_queue(self.settings.default_queue)
        problem = queue_name_problem(self.queue, self.settings)
        if problem:
            raise EnqueueError(f"job {self.spec.name!r}: {problem}")
        self.delay = _countdown(spec, call)
        self.expires = _expires(spec, call, self.settings)
        self.signature_size = overhead(self.settings)
        self.limit = self.engine.facts.max_message_size - self.signature_size
        self._good_shapes: set[tuple[int, tuple[str, ...]]] = set()
        self._empty_frame = len(Envelope(job=self.spec.name, queue=self.queue).encode())
        self.plan = plan_for(self.spec, self.settings)
        self.tracker = get_tracker(self.settings) if self.plan is not None else None
        self.policies = tuple(p for p in with_hook("on_enqueue") if p.applies(spec))
        self.coordination: Coordination | None = None
        if self.policies:
            self.coordination = get_coordination()
            coordinated = [policy for policy in self.policies if policy.coordinated]
            if coordinated and self.engine.facts.multi_process and not self.coordination.shared:
                raise ConfigurationError(
                    f"job {self.spec.name!r} uses {coordinated[0].name}= but the coordination store is in-process; "
                    "set TASKBRIDGE_COORDINATION_URL to a redis:// URL shared by all workers"
                )

    def _check_shape(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        # Whether arguments bind depends only on their count and keyword names, so each shape is
        # bound once per publisher: enqueue_many of millions does not pay for inspect every time.
        shape = (len(args), tuple(kwargs))
        if shape in self._good_shapes:
            return
        try:
            self.spec.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise EnqueueError(f"job {self.spec.name!r}: arguments do not match {self.spec.described}: {exc}") from None
        if len(self._good_shapes) < 64:
            self._good_shapes.add(shape)

    def _size_bound(self, arguments_size: int, chain: list[dict[str, Any]], headers: dict[str, Any]) -> int:
        """More than the encoded envelope can be: its arguments' JSON, an empty envelope with the same
        chain, the headers, and room for the timestamps and attempt number."""
        if chain:
            frame = len(Envelope(job=self.spec.name, queue=self.queue, chain=chain).encode())
        else:
            frame = self._empty_frame
        return arguments_size + frame + (len(encode_json(headers)) if headers else 0) + 100

    def build(
        self, args: Sequence[Any], kwargs: dict[str, Any], chain: list[dict[str, Any]] | None = None
    ) -> Envelope | None:
        name = self.spec.name
        arguments_size = check_json_arguments(name, args, kwargs)
        self._check_shape(args, kwargs)
        now = time.time()
        due = now + self.delay
        headers: dict[str, Any] = {TRACK_HEADER: self.plan.header()} if self.plan is not None else {}
        if self.coordination is not None:
            wait = self.delay + (self.expires or 3600.0)
            call = EnqueueCall(self.spec, args, kwargs, headers, self.coordination, wait)
            for policy in self.policies:
                if not policy.on_enqueue(call):
                    self._undo(self.policies[: self.policies.index(policy)], headers)
                    return None
        envelope = Envelope(
            job=name,
            queue=self.queue,
            args=list(args),
            kwargs=dict(kwargs),
            enqueued_at=now,
            expires_at=None if self.expires is None else due + self.expires,
            not_before=due if self.delay > 0 else None,
            chain=list(chain or []),
            headers=headers,
        )
        limit = self.limit
        if self._size_bound(arguments_size, envelope.chain, headers) <= limit:
            return envelope
        size = len(envelope.encode().encode("utf-8")) + self.signature_size
        if size > self.engine.facts.max_message_size:
            self._undo(self.policies, headers)
            raise EnqueueError(
                f"job {name!r}: the message is {size} bytes, over the {self.engine.facts.max_message_size}-byte "
                f"limit of the {self.engine.name} transport; pass a reference (an id, a URL) instead of the data"
            )
        return envelope

    def batch(self) -> EnvelopeBatch | None:
        """An empty batch to :meth:`add` calls to, or None when each call needs its own envelope
        (``unique`` jobs claim a mark per call)."""
        if self.coordination is not None:
            return None
        now = time.time()
        due = now + self.delay
        return EnvelopeBatch(
            self.spec.name,
            self.queue,
            enqueued_at=now,
            expires_at=None if self.expires is None else due + self.expires,
            not_before=due if self.delay > 0 else None,
            headers={TRACK_HEADER: self.plan.header()} if self.plan is not None else {},
        )

    def add(self, batch: EnvelopeBatch, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Check one call as :meth:`build` does and add it to ``batch``."""
        args_text, kwargs_text = json_arguments(self.spec.name, args, kwargs)
        self._check_shape(args, kwargs)
        size = batch.frame + len(args_text) + len(kwargs_text)
        if size > self.limit:
            self._too_big(size)
        batch.add(args, kwargs, args_text, kwargs_text)

    def add_calls(self, batch: EnvelopeBatch, calls: Iterable[Any]) -> None:
        """Check each of ``calls`` (``enqueue_many`` items) as :meth:`add` does and add them to
        ``batch``. When one is refused, the calls before it are in ``batch``: its length is the
        refused call's index."""
        if isinstance(calls, list) and self._add_scalar_tuples(batch, calls):
            return
        name = self.spec.name
        good_shapes = self._good_shapes
        room = self.limit - batch.frame
        all_args: list[Sequence[Any]] = []
        all_kwargs: list[dict[str, Any]] = []
        args_texts: list[str] = []
        kwargs_texts: list[str] = []
        args: Sequence[Any]
        kwargs: dict[str, Any]
        try:
            for item in calls:
                if type(item) is tuple and not (len(item) == 2 and isinstance(item[1], dict)):
                    args, kwargs = item, _NO_KWARGS  # the common item, an args tuple, without _split_call
                else:
                    args, kwargs = _split_call(name, item)
                args_text, kwargs_text = json_arguments(name, args, kwargs)
                if (len(args), tuple(kwargs)) not in good_shapes:
                    self._check_shape(args, kwargs)
                if len(args_text) + len(kwargs_text) > room:
                    self._too_big(batch.frame + len(args_text) + len(kwargs_text))
                all_args.append(args)
                all_kwargs.append(kwargs)
                args_texts.append(args_text)
                kwargs_texts.append(kwargs_text)
        finally:
            batch.extend(all_args, all_kwargs, args_texts, kwargs_texts)

    def _add_scalar_tuples(self, batch: EnvelopeBatch, calls: list[Any]) -> bool:
        """Add ``calls`` to ``batch`` at once when all are args tuples of plain scalars that bind and
        fit (the common ``enqueue_many``); False, having added nothing, for anything else."""
        texts = scalar_args_texts(calls)
        if texts is None or max(map(len, texts), default=0) + 2 > self.limit - batch.frame:
            return False
        for length in set(map(len, calls)):
            if (length, ()) not in self._good_shapes:
                try:
                    self._check_shape((None,) * length, {})
                except EnqueueError:
                    return False
        batch.extend(calls, [_NO_KWARGS] * len(calls), texts, ["{}"] * len(calls))
        return True

    def _too_big(self, size: int) -> None:
        raise EnqueueError(
            f"job {self.spec.name!r}: the message is {size + self.signature_size} bytes, over the "
            f"{self.engine.facts.max_message_size}-byte limit of the {self.engine.name} transport; "
            "pass a reference (an id, a URL) instead of the data"
        )

    def forget(self, envelopes: Sequence[Envelope]) -> None:
        """Undo what the policies did at enqueue (uniqueness marks) for envelopes built but never sent."""
        for envelope in envelopes:
            self._undo(self.policies, envelope.headers)

    def _undo(self, policies: Sequence[Policy], headers: dict[str, Any]) -> None:
        if self.coordination is not None:
            for policy in reversed(policies):
                policy.enqueue_undone(headers, self.coordination)

    def send(self, envelopes: Sequence[Envelope]) -> None:
        if self.tracker is not None and self.plan is not None and envelopes:
            self.tracker.enqueued(envelopes, self.plan)
        schedule(self.engine, envelopes, self.delay, self.settings)
        self._sent(len(envelopes))

    def start_send(self, envelopes: Sequence[Envelope]) -> Callable[[], None]:
        """:meth:`send` that returns before the broker answered where the engine can; the function
        returned waits for the answer."""
        if not envelopes:
            return already_stored
        if self.tracker is not None and self.plan is not None:
            self.tracker.enqueued(envelopes, self.plan)
        wait = start_schedule(self.engine, envelopes, self.delay, self.settings)
        count = len(envelopes)

        def sent() -> None:
            wait()
            self._sent(count)

        return sent

    def _sent(self, count: int) -> None:
        if count and events.has_subscribers():
            events.emit(events.EnqueuedEvent(job=self.spec.name, queue=self.queue, count=count, delay=self.delay))


def enqueue_one(
    spec: JobSpec,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    call: CallOptions = PLAIN,
    *,
    chain: list[dict[str, Any]] | None = None,
) -> JobRef | None:
    """Check, build and publish one envelope; None if a ``unique`` twin is already pending."""
    publisher = Producer(spec, call)
    envelope = publisher.build(args, kwargs, chain)
    if envelope is None:
        return None
    publisher.send([envelope])
    return JobRef(envelope.id, envelope, publisher.settings)


_default_publishers: dict[str, Producer] = {}


def enqueue_default(spec: JobSpec, args: Sequence[Any], kwargs: dict[str, Any]) -> JobRef | None:
    """``job.enqueue(...)`` without per-call options: reuses one publisher per job while the settings
    and engine stay the same, so a loop of enqueues pays only for building and sending."""
    publisher = _default_publishers.get(spec.name)
    if (
        publisher is None
        or publisher.spec is not spec
        or publisher.settings is not get_settings()
        or publisher.engine is not get_engine()
    ):
        publisher = _default_publishers[spec.name] = Producer(spec)
    envelope = publisher.build(args, kwargs)
    if envelope is None:
        return None
    publisher.send([envelope])
    return JobRef(envelope.id, envelope, publisher.settings)


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


def _build(publisher: Producer, chunk: list[Any], consumed: int, total: int) -> Sequence[Envelope]:
    """The envelopes of one chunk of calls: one :class:`EnvelopeBatch` unless each call needs its own
    envelope (``unique``)."""
    name = publisher.spec.name
    templated = publisher.batch()
    if templated is not None:
        try:
            publisher.add_calls(templated, chunk)
        except EnqueueError as exc:
            item = consumed + len(templated) + 1
            raise EnqueueError(f"{exc} (item {item}; {total} earlier calls were published)") from None
        return templated
    built: list[Envelope] = []
    for item in chunk:
        consumed += 1
        try:
            envelope = publisher.build(*_split_call(name, item))
        except EnqueueError as exc:
            publisher.forget(built)
            raise EnqueueError(f"{exc} (item {consumed}; {total} earlier calls were published)") from None
        if envelope is not None:
            built.append(envelope)
    return built


def enqueue_batches(
    spec: JobSpec,
    calls: Iterable[Any],
    call: CallOptions = PLAIN,
    *,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    refs: bool = False,
) -> int | list[JobRef]:
    """Publish many calls in batches of ``batch_size``; memory is bounded by two batches (one being
    built while the broker stores the one before, where the engine can). Returns the count, or with
    ``refs`` a :class:`JobRef` per published call.

    ``progress`` is called after each batch with the number of calls handled so far (published,
    or refused as duplicates of a ``unique`` job)."""
    publisher = Producer(spec, call)
    size = publisher.settings.enqueue_batch_size if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise EnqueueError(f"job {spec.name!r}: batch_size must be at least 1")
    total = consumed = 0
    sent: list[JobRef] = []
    # The batch written but not yet stored: how to wait for it, its size, the calls handled with it,
    # and its envelopes only when refs are asked for (the engine holds what it still needs).
    in_flight: tuple[Callable[[], None], int, int, Sequence[Envelope] | None] | None = None

    def stored() -> None:
        """Wait until the broker stored the batch in flight, and count it."""
        nonlocal total, in_flight
        if in_flight is None:
            return
        (wait, count, handled, envelopes), in_flight = in_flight, None
        wait()
        total += count
        if envelopes is not None:
            sent.extend(JobRef(envelope.id, envelope, publisher.settings) for envelope in envelopes)
        if progress is not None:
            progress(handled)

    iterator = iter(calls)
    try:
        while chunk := list(itertools.islice(iterator, size)):
            published = total + (in_flight[1] if in_flight is not None else 0)
            batch = _build(publisher, chunk, consumed, published)
            consumed += len(chunk)
            del chunk  # the next chunk is read only after this batch is written
            stored()
            in_flight = (publisher.start_send(batch), len(batch), consumed, batch if refs else None)
            del batch
        stored()
    except BaseException:
        # A bad call or an interrupt while a batch was in flight: that batch still counts as
        # published once stored, and if it was not, that failure is raised (the first chained to it).
        stored()
        raise
    return sent if refs else total
