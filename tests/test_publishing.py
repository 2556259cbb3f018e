"""Enqueueing: delay hops, batches with bounded memory, size limits, eta/countdown/expires, uniqueness."""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from support import Embedded, EmbeddedFactory

from taskbridge import EnqueueError, events, job
from taskbridge.engine import set_engine
from taskbridge.envelope import Envelope
from taskbridge.memory import MemoryEngine
from taskbridge.outcomes import Defer, Reason
from taskbridge.runner import Runner

Q = "publishing"
ran: list[Any] = []


@job(name="publishing.note", queue=Q)
def note(i: int = 0, text: str = "") -> None:
    ran.append(i)


@job(name="publishing.pair", queue=Q)
def pair(a: int, b: int) -> None: ...


@job(name="publishing.unique", queue=Q, unique="user:{user_id}")
def remind(user_id: int, payload: str = "") -> None: ...


class RecordingEngine(MemoryEngine):
    """The embedded engine, noting the delay of every publish call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publishes: list[tuple[list[Envelope], float]] = []

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        self.publishes.append((list(envelopes), delay))
        super().publish(envelopes, delay)


class CountingEngine(MemoryEngine):
    """The embedded engine's facts, but publishing only counts, so a million envelopes cost no memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published = 0
        self.batches: list[int] = []

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        self.published += len(envelopes)
        self.batches.append(len(envelopes))


def install(tb: Embedded, engine: MemoryEngine) -> None:
    set_engine(engine)
    tb.engine = engine
    tb.runner = Runner(engine, tb.settings, tb.coordination)


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    ran.clear()


# delays longer than the transport holds


def test_a_delay_over_the_native_maximum_is_published_with_the_maximum_and_not_before(
    make_embedded: EmbeddedFactory,
) -> None:
    tb = make_embedded(max_native_delay="2s", inline_wait_max=0.1)
    engine = RecordingEngine(tb.settings)
    install(tb, engine)
    before = time.time()
    envelope = note.options(countdown="10s").enqueue(1)
    assert envelope is not None
    [(published, delay)] = engine.publishes
    assert delay == 2.0
    assert published[0].not_before == pytest.approx(before + 10, abs=0.5)
    assert envelope.expires_at == pytest.approx(before + 10 + 86400, abs=0.5)

    # delivered after its native 2 s, the runner sends it on again: not an attempt, same due time
    outcome = tb.runner.run(published[0].encode())
    assert isinstance(outcome, Defer) and outcome.reason == "delay" and 9 < outcome.delay <= 10
    [(hopped, hop_delay)] = engine.publishes[1:]
    assert hop_delay == 2.0
    assert hopped[0].attempt == 1 and hopped[0].id == envelope.id
    assert hopped[0].not_before == pytest.approx(published[0].not_before, abs=0.1)
    assert ran == []


def test_a_delay_within_the_native_maximum_is_published_as_is(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(max_native_delay="2s")
    engine = RecordingEngine(tb.settings)
    install(tb, engine)
    note.options(countdown=1.5).enqueue(1)
    note.enqueue(2)
    assert [delay for _, delay in engine.publishes] == [1.5, 0]
    assert engine.publishes[1][0][0].not_before is None


def test_a_hopping_job_runs_once_when_due(make_embedded: EmbeddedFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    tb = make_embedded(max_native_delay=0.3, inline_wait_max=0.05)
    hops: list[events.Event] = []
    listener = hops.append
    events.subscribe(listener)
    try:
        note.options(countdown=1.0).enqueue(7)
        tb.engine.start([Q], 2)
        assert tb.engine.join(timeout=30)
    finally:
        events.unsubscribe(listener)
    assert ran == [7]
    [started] = [e for e in hops if isinstance(e, events.StartedEvent)]
    assert started.not_before is not None and started.enqueued_at is not None
    assert started.not_before == pytest.approx(started.enqueued_at + 1.0, abs=0.01)
    assert started.time >= started.not_before - 0.005, "started once due (the clocks may differ by a few ms)"
    assert len([e for e in hops if isinstance(e, events.DeferredEvent) and e.reason == Reason.DELAY]) >= 2


# eta, countdown, expires


def test_eta_as_an_aware_datetime_or_timestamp(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded()
    engine = RecordingEngine(tb.settings)
    install(tb, engine)
    now = time.time()
    in_a_minute = dt.datetime.fromtimestamp(now + 60, tz=dt.timezone.utc)
    note.options(eta=in_a_minute).enqueue(1)
    note.options(eta=in_a_minute.astimezone(dt.timezone(dt.timedelta(hours=-5)))).enqueue(2)
    note.options(eta=now + 30).enqueue(3)
    note.options(eta=now - 3600).enqueue(4)
    note.options(eta=now + 30, countdown="2m").enqueue(5)
    delays = [delay for _, delay in engine.publishes]
    assert delays[0] == pytest.approx(60, abs=1) and delays[1] == pytest.approx(60, abs=1)
    assert delays[2] == pytest.approx(30, abs=1)
    assert delays[3] == 0, "an eta in the past runs now"
    assert delays[4] == pytest.approx(120, abs=1), "the later of countdown and eta wins"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eta": dt.datetime(2030, 1, 1)}, r"eta= must be timezone-aware"),
        ({"eta": "tomorrow"}, r"eta= must be a datetime or a UNIX timestamp, got 'tomorrow'"),
        ({"eta": True}, r"eta= must be a datetime or a UNIX timestamp"),
        ({"countdown": "soonish"}, r"countdown: cannot read 'soonish'"),
        ({"countdown": -5}, r"countdown: must not be negative"),
        ({"expires": "never"}, r"expires: cannot read 'never'"),
        ({"queue": "high priority"}, r"queue= must be letters, digits, '-', '_' or '\.', got 'high priority'"),
        ({"queue": ""}, r"queue= must be letters"),
    ],
)
def test_bad_call_options_fail_at_enqueue_naming_the_job(
    embedded: Embedded, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(EnqueueError, match=r"^job 'publishing\.note': " + message):
        note.options(**options).enqueue(1)
    assert embedded.engine.depth(Q) == 0


def test_expiry_counts_from_when_the_job_is_due(embedded: Embedded) -> None:
    now = time.time()
    later = note.options(countdown=60, expires="10s").enqueue(1)
    never = note.options(expires=None).enqueue(2)
    assert later is not None and later.expires_at == pytest.approx(now + 70, abs=1)
    assert never is not None and never.expires_at is None


def test_options_queue_sends_elsewhere(embedded: Embedded) -> None:
    envelope = note.options(queue="priority").enqueue(1)
    assert envelope is not None and envelope.queue == "priority"
    assert embedded.engine.depth("priority") == 1 and embedded.engine.depth(Q) == 0


# checks at enqueue


def test_arguments_that_do_not_fit_the_function_fail_at_enqueue(embedded: Embedded) -> None:
    with pytest.raises(EnqueueError, match=r"job 'publishing\.pair': arguments do not match pair\(.*'b'"):
        pair.enqueue(1)
    with pytest.raises(EnqueueError, match=r"job 'publishing\.pair': arguments do not match.*'c'"):
        pair.enqueue(1, 2, c=3)
    with pytest.raises(EnqueueError, match=r"job 'publishing\.note': argument 'text' is not JSON-serializable"):
        note.enqueue(text=object())
    assert embedded.engine.depth(Q) == 0


def test_an_envelope_over_the_transport_limit_fails_naming_the_job(embedded: Embedded) -> None:
    limit = embedded.engine.facts.max_message_size
    with pytest.raises(EnqueueError, match=rf"job 'publishing\.note': the message is \d+ bytes, over the {limit}-byte"):
        note.enqueue(text="x" * limit)
    with pytest.raises(EnqueueError, match=r"pass a reference \(an id, a URL\) instead of the data"):
        note.enqueue(text="é" * (limit // 2))  # under the limit in characters, over it in UTF-8 bytes
    assert embedded.engine.depth(Q) == 0


def test_an_oversize_unique_job_does_not_keep_its_key(embedded: Embedded) -> None:
    limit = embedded.engine.facts.max_message_size
    with pytest.raises(EnqueueError, match=r"publishing\.unique"):
        remind.enqueue(5, payload="x" * limit)
    assert remind.enqueue(5) is not None


def test_unique_duplicates_return_none(embedded: Embedded) -> None:
    first = remind.enqueue(1)
    assert first is not None
    assert remind.enqueue(1) is None
    assert remind.enqueue(user_id=1, payload="different payload, same key") is None
    assert remind.enqueue_many([{"user_id": 1}, {"user_id": 2}, {"user_id": 2}, {"user_id": 3}]) == 2
    assert [(e.args, e.kwargs) for e in embedded.queued(Q)] == [([1], {}), ([], {"user_id": 2}), ([], {"user_id": 3})]


# enqueue_many


def test_enqueue_many_accepts_kwargs_args_and_pairs(embedded: Embedded) -> None:
    count = pair.enqueue_many([{"a": 1, "b": 2}, (3, 4), [5, 6], ((7,), {"b": 8})], batch_size=3)
    assert count == 4
    assert [(e.args, e.kwargs) for e in embedded.queued(Q)] == [
        ([], {"a": 1, "b": 2}),
        ([3, 4], {}),
        ([5, 6], {}),
        ([7], {"b": 8}),
    ]


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_enqueue_many_refuses_a_bad_batch_size(embedded: Embedded, batch_size: Any) -> None:
    with pytest.raises(EnqueueError, match=r"job 'publishing\.note': batch_size must be at least 1"):
        note.enqueue_many([{"i": 1}], batch_size=batch_size)
    assert embedded.engine.depth(Q) == 0


def test_enqueue_many_names_the_job_and_the_item_that_is_bad(embedded: Embedded) -> None:
    with pytest.raises(EnqueueError, match=r"job 'publishing\.note': enqueue_many items must be a kwargs dict"):
        note.enqueue_many([{"i": 1}, 5])
    items = [{"i": 1}, {"i": 2}, {"i": 3}, {"text": object()}]
    with pytest.raises(
        EnqueueError, match=r"job 'publishing\.note': argument 'text' .* \(item 4; 2 earlier calls were published\)$"
    ):
        note.enqueue_many(items, batch_size=2)
    assert [e.kwargs["i"] for e in embedded.queued(Q)] == [1, 2]


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ([(1,), (2,), (3, "x", "extra")], r"arguments do not match"),
        ([(1,), (2,), (float("nan"),)], r"positional argument 0 is not JSON-serializable"),
        ([(1,), (2,), ({1: "x"},)], r"positional argument 0 does not survive a JSON round trip"),
        ([(1,), (2,), ((), {1: "x"})], r"keyword argument names must be strings"),
        ([(1,), (2,), (0, "y" * 1_100_000)], r"the message is \d+ bytes, over the"),
    ],
)
def test_enqueue_many_names_the_args_tuple_that_is_bad(embedded: Embedded, items: list[Any], why: str) -> None:
    with pytest.raises(EnqueueError, match=rf"job 'publishing\.note': {why}.* \(item 3; 0 earlier calls"):
        note.enqueue_many(items)
    assert embedded.queued(Q) == []


def test_enqueue_many_that_fails_forgets_the_unique_keys_of_its_unsent_batch(embedded: Embedded) -> None:
    with pytest.raises(EnqueueError, match=r"item 2; 0 earlier calls"):
        remind.enqueue_many([{"user_id": 1}, {"user_id": 2, "payload": b"bytes"}])
    assert embedded.queued(Q) == []
    assert remind.enqueue(1) is not None, "the key of the call that was never sent is free"


@pytest.mark.usefixtures("job_registry")
def test_a_unique_key_needs_its_arguments(embedded: Embedded) -> None:
    @job(name="publishing.tenant_unique", queue=Q, unique="tenant:{tenant}")
    def per_tenant(**fields: Any) -> None: ...

    assert per_tenant.enqueue(tenant="acme", n=1) is not None
    assert per_tenant.enqueue(tenant="acme", n=2) is None
    with pytest.raises(EnqueueError, match=r"the key 'tenant:\{tenant\}' needs the argument 'tenant'"):
        per_tenant.enqueue(n=3)


def test_enqueue_many_of_a_million_publishes_in_batches_never_more_than_one_ahead(
    make_embedded: EmbeddedFactory,
) -> None:
    tb = make_embedded()
    engine = CountingEngine(tb.settings)
    install(tb, engine)
    total, batch = 1_000_000, 5_000

    def calls() -> Iterator[dict[str, int]]:
        for i in range(total):
            # item i is asked for only once every earlier batch has been published
            assert i - engine.published < batch, f"item {i} asked for with {engine.published} published"
            yield {"i": i}

    assert note.enqueue_many(calls(), batch_size=batch) == total
    assert engine.published == total
    assert engine.batches == [batch] * (total // batch)


def test_enqueue_many_memory_stays_within_one_batch(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(enqueue_batch_size=200)
    engine = CountingEngine(tb.settings)
    install(tb, engine)
    # 5,000 calls of ~4 kB each would hold over 20 MB if they were all kept
    tracemalloc.start()
    try:
        assert note.enqueue_many({"i": i, "text": f"{i}" + "y" * 4_000} for i in range(5_000)) == 5_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, f"peak {peak / 1e6:.1f} MB while publishing 200 at a time"
    assert engine.batches == [200] * 25
