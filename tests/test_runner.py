"""Each policy through Runner.run on the embedded engine with its workers off, as DESIGN.md's table says."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from support import Embedded, EmbeddedFactory

from taskbridge import Backoff, ConfigurationError, JobTimeout, events, job
from taskbridge.coordination.base import slot_spacing_microseconds
from taskbridge.engine import MessageRunner, TransportFacts
from taskbridge.envelope import Envelope, decode
from taskbridge.job import JobSpec
from taskbridge.memory import MemoryEngine
from taskbridge.outcomes import Dead, Defer, Done, Expired, Retry, Skip
from taskbridge.policies import rate_limit
from taskbridge.policies.rate_limit import EARLY, SLOT_HEADER
from taskbridge.runner import Runner
from taskbridge.units import Rate
from taskbridge.worker import prepare

Q = "runner"
ran: list[Any] = []
# time.time() and the monotonic clock that sleeps and the coordination store count on may differ
# by this much within one test (NTP slews one against the other)
CLOCKS = 0.005


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    ran.clear()


@job(name="runner.record", queue=Q)
def record(value: Any = None) -> None:
    ran.append(value)


@job(name="runner.two_args", queue=Q)
def two_args(a: int, b: int) -> None:
    ran.append((a, b))


@job(name="runner.strict", queue=Q, drop_unknown_kwargs=False)
def strict(a: int) -> None:
    ran.append(a)


@job(name="runner.flaky", queue=Q, retry=Backoff(max_retries=2, base=0.05, jitter=False, on=(OSError,)))
def flaky(n: int) -> None:
    ran.append(n)
    raise ConnectionError(f"flaky {n}")


@job(name="runner.fatal", queue=Q, retry=Backoff(max_retries=5, on=(OSError,)))
def fatal() -> None:
    ran.append("fatal")
    raise ValueError("bad data")


@job(name="runner.slow", queue=Q, timeout=0.2, retry=Backoff(max_retries=1, base=0.05, jitter=False))
def slow() -> None:
    try:
        for _ in range(300):
            time.sleep(0.01)
    except JobTimeout:
        ran.append("saw JobTimeout")
        raise
    ran.append("finished")


@job(name="runner.patient", queue=Q, timeout=60)
def patient() -> None:
    ran.append("patient started")
    release.wait(10)


@job(name="runner.limited", queue=Q, rate_limit="5/s")
def limited(n: int) -> None:
    ran.append(n)


release = threading.Event()


@job(name="runner.locked", queue=Q, lock="account:{account}")
def locked(account: int, n: int) -> None:
    ran.append(n)
    release.wait(5)


@job(name="runner.skipping", queue=Q, lock="index:{index}", on_lock="skip")
def skipping(index: str, n: int) -> None:
    ran.append(n)
    release.wait(5)


@job(name="runner.capped", queue=Q, concurrency=2)
def capped(n: int) -> None:
    ran.append(n)
    release.wait(5)


@job(name="runner.once", queue=Q, unique="report:{user_id}")
def once(user_id: int) -> None:
    ran.append(user_id)


@job(name="runner.tenant_locked", queue=Q, lock="tenant:{tenant}")
def tenant_locked(**fields: Any) -> None:
    ran.append(fields)
    release.wait(5)


@job(name="runner.unique_flaky", queue=Q, unique=True, retry=Backoff(max_retries=1, base=0.1, on=(OSError,)))
def unique_flaky(n: int) -> None:
    raise OSError("not yet")


def run(tb: Embedded, envelope: Envelope | str) -> Any:
    return tb.runner.run(envelope if isinstance(envelope, str) else envelope.encode())


def in_thread(tb: Embedded, envelope: Envelope) -> threading.Thread:
    thread = threading.Thread(target=run, args=(tb, envelope), daemon=True)
    thread.start()
    return thread


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def outcomes() -> Any:
    seen: list[events.Event] = []
    events.subscribe(seen.append)
    yield seen
    events.unsubscribe(seen.append)


# a job that runs


def test_a_job_runs_and_is_done(embedded: Embedded, outcomes: list[events.Event]) -> None:
    envelope = two_args.enqueue(1, b=2)
    assert envelope is not None
    outcome = run(embedded, embedded.engine.messages(Q)[0])
    assert isinstance(outcome, Done) and outcome.envelope.id == envelope.id
    assert ran == [(1, 2)]
    assert [type(e) for e in outcomes if not isinstance(e, events.EnqueuedEvent)] == [
        events.StartedEvent,
        events.DoneEvent,
    ]
    assert embedded.engine.depth(Q) == 1, "the runner does not take messages off the queue; the engine does"


# expiry


def test_an_expired_envelope_is_dropped_and_never_runs(embedded: Embedded) -> None:
    stale = Envelope(job=record.name, queue=Q, args=["stale"], expires_at=time.time() - 1)
    outcome = run(embedded, stale)
    assert isinstance(outcome, Expired) and outcome.envelope.id == stale.id
    assert ran == []
    assert embedded.queued(Q) == [] and embedded.dead_letters(Q) == []


# delay hops


def test_an_envelope_before_its_not_before_is_deferred_for_the_remaining_time(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(inline_wait_max=0.2)
    early = Envelope(job=record.name, queue=Q, args=["early"], not_before=time.time() + 30)
    outcome = run(tb, early)
    assert isinstance(outcome, Defer) and outcome.reason == "delay"
    assert 29 < outcome.delay <= 30
    assert ran == []
    [again] = tb.queued(Q)
    assert again.id == early.id and again.attempt == 1, "a delay hop is not an attempt"
    assert again.not_before == pytest.approx(early.not_before, abs=0.5)


def test_a_short_remaining_delay_is_slept_inline(make_embedded: EmbeddedFactory, outcomes: list[events.Event]) -> None:
    tb = make_embedded(inline_wait_max=0.5)
    soon = Envelope(job=record.name, queue=Q, args=["soon"], not_before=time.time() + 0.2)
    outcome = run(tb, soon)
    assert isinstance(outcome, Done) and ran == ["soon"]
    [started] = [e for e in outcomes if isinstance(e, events.StartedEvent)]
    assert soon.not_before is not None
    assert started.time >= soon.not_before - CLOCKS, "started only once due"
    assert tb.queued(Q) == []


# rate limit


@pytest.mark.usefixtures("job_registry")
def test_rate_limit_defers_with_a_reserved_slot_that_is_kept_on_return(make_embedded: EmbeddedFactory) -> None:
    # Slots a second apart, and a deferred job back 0.2 s before its slot: wide enough that a busy
    # machine neither lets the second run reach the next slot nor makes it miss its own.
    tb = make_embedded(inline_wait_max=0.4)

    @job(name="runner.paced", queue=Q, rate_limit="1/s")
    def paced(n: int) -> None:
        ran.append(n)

    interval = slot_spacing_microseconds(Rate(1, 1)) / 1_000_000  # a period and its slot margin
    before_first = time.time()
    assert isinstance(run(tb, Envelope(job=paced.name, queue=Q, args=[1])), Done)
    before_second = time.time()
    outcome = run(tb, Envelope(job=paced.name, queue=Q, args=[2]))
    after_second = time.time()
    assert isinstance(outcome, Defer) and outcome.reason == "rate limit"
    [deferred] = tb.queued(Q)
    assert deferred.attempt == 1, "a rate-limit deferral is not an attempt"
    slot = deferred.headers[SLOT_HEADER]
    assert before_first + interval - CLOCKS <= slot <= after_second + interval + CLOCKS, "the slot after the first"
    assert before_second + outcome.delay <= slot <= after_second + outcome.delay + EARLY, "back just before its slot"
    assert ran == [1]

    time.sleep(outcome.delay)
    back = run(tb, deferred.encode())
    assert isinstance(back, Done) and back.envelope.attempt == 1
    assert SLOT_HEADER not in back.envelope.headers
    assert ran == [1, 2]
    # job 2 ran in the slot it had reserved, so the next free slot is the third, not the fourth
    wait = tb.coordination.reserve_rate(paced.name, Rate(1, 1))
    assert wait <= interval, "one slot taken after the first run's, not two"


def test_short_rate_limit_waits_are_slept_inline(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(inline_wait_max=0.5)
    started = time.monotonic()
    for n in range(3):
        assert isinstance(run(tb, Envelope(job=limited.name, queue=Q, args=[n])), Done)
    assert ran == [0, 1, 2]
    assert time.monotonic() - started >= 0.38, "3 runs at 5/s take two intervals"
    assert tb.queued(Q) == []


def test_a_job_woken_too_late_for_its_slot_takes_the_next(
    make_embedded: EmbeddedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run 50 ms after its slot, job 2 could make a sixth start within a second of the first; it
    # takes a new slot instead (5/s: slots 0.204 s apart, 0.2 s and 2% of a period).
    overslept: list[float] = []

    def sleep_late(seconds: float) -> None:
        time.sleep(seconds + (0.05 if not overslept else 0))
        overslept.append(seconds)

    monkeypatch.setattr(rate_limit, "time", SimpleNamespace(time=time.time, sleep=sleep_late))
    tb = make_embedded(inline_wait_max=0.5)
    started = time.monotonic()
    for n in (1, 2):
        assert isinstance(run(tb, Envelope(job=limited.name, queue=Q, args=[n])), Done)
    assert ran == [1, 2]
    assert len(overslept) == 2, "job 2 slept for a second slot"
    assert time.monotonic() - started >= 0.4, "job 2 ran in the third slot, not late in the second"
    wait = tb.coordination.reserve_rate(limited.name, Rate(5, 1))
    assert time.monotonic() - started + wait == pytest.approx(0.612, abs=0.05), "the fourth slot is next"


def test_a_deferred_job_back_too_late_for_its_slot_takes_a_new_one(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(inline_wait_max=0.01)
    assert isinstance(run(tb, Envelope(job=limited.name, queue=Q, args=[1])), Done)
    missed = time.time() - 0.05
    outcome = run(tb, Envelope(job=limited.name, queue=Q, args=[2], headers={SLOT_HEADER: missed}))
    assert isinstance(outcome, Defer) and outcome.reason == "rate limit"
    [deferred] = tb.queued(Q)
    assert deferred.headers[SLOT_HEADER] == pytest.approx(time.time() + outcome.delay, abs=0.05)
    assert deferred.headers[SLOT_HEADER] > missed + 0.2, "a new slot, one interval after job 1's"
    assert ran == [1]


# locks and concurrency


def test_a_busy_lock_defers_by_lock_retry(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(lock_retry=0.3)
    release.clear()
    holder = in_thread(tb, Envelope(job=locked.name, queue=Q, kwargs={"account": 7, "n": 1}))
    wait_until(lambda: ran == [1])
    try:
        outcome = run(tb, Envelope(job=locked.name, queue=Q, kwargs={"account": 7, "n": 2}))
        assert isinstance(outcome, Defer) and outcome.reason == "lock busy" and outcome.delay == 0.3
        [deferred] = tb.queued(Q)
        assert deferred.attempt == 1
        other_key = in_thread(tb, Envelope(job=locked.name, queue=Q, kwargs={"account": 8, "n": 3}))
        wait_until(lambda: 3 in ran)
    finally:
        release.set()
    holder.join(5)
    other_key.join(5)
    assert ran == [1, 3]
    assert isinstance(run(tb, deferred.encode()), Done), "the lock is free once the holder ended"
    assert ran == [1, 3, 2]


def test_a_lock_key_may_come_from_keyword_arguments(embedded: Embedded) -> None:
    release.clear()
    holder = in_thread(embedded, Envelope(job=tenant_locked.name, queue=Q, kwargs={"tenant": "acme", "n": 1}))
    wait_until(lambda: len(ran) == 1)
    try:
        same = run(embedded, Envelope(job=tenant_locked.name, queue=Q, kwargs={"tenant": "acme", "n": 2}))
        missing = run(embedded, Envelope(job=tenant_locked.name, queue=Q, kwargs={"n": 3}))
    finally:
        release.set()
    holder.join(5)
    assert isinstance(same, Defer) and same.reason == "lock busy"
    assert isinstance(missing, Dead)
    assert (
        missing.reason
        == "job 'runner.tenant_locked': the key 'tenant:{tenant}' needs the argument 'tenant', which this call lacks"
    )
    assert ran == [{"tenant": "acme", "n": 1}]


def test_a_busy_lock_skips_when_the_job_says_so(embedded: Embedded) -> None:
    release.clear()
    holder = in_thread(embedded, Envelope(job=skipping.name, queue=Q, kwargs={"index": "products", "n": 1}))
    wait_until(lambda: ran == [1])
    try:
        outcome = run(embedded, Envelope(job=skipping.name, queue=Q, kwargs={"index": "products", "n": 2}))
    finally:
        release.set()
    holder.join(5)
    assert isinstance(outcome, Skip) and outcome.reason == "lock busy"
    assert ran == [1]
    assert embedded.queued(Q) == [] and embedded.dead_letters(Q) == []


def test_concurrency_caps_running_instances(embedded: Embedded) -> None:
    release.clear()
    threads = [in_thread(embedded, Envelope(job=capped.name, queue=Q, args=[n])) for n in (1, 2)]
    wait_until(lambda: sorted(ran) == [1, 2])
    try:
        outcome = run(embedded, Envelope(job=capped.name, queue=Q, args=[3]))
    finally:
        release.set()
    for thread in threads:
        thread.join(5)
    assert isinstance(outcome, Defer)
    assert isinstance(run(embedded, Envelope(job=capped.name, queue=Q, args=[4])), Done)
    assert sorted(ran) == [1, 2, 4]


@job(name="runner.locked_and_capped", queue=Q, lock="account:{account}", concurrency=1)
def locked_and_capped(account: int) -> None:
    ran.append(account)


def test_a_run_whose_lease_is_busy_gives_back_the_lock_it_took(embedded: Embedded) -> None:
    store = embedded.coordination
    assert store.acquire_lease(f"concurrency:{locked_and_capped.name}", 1, 60, "another-run") is not None
    outcome = run(embedded, Envelope(job=locked_and_capped.name, queue=Q, kwargs={"account": 7}))
    assert isinstance(outcome, Defer) and outcome.reason == "lock busy"
    assert store.lock_ttl("lock:account:7") is None, "the lock taken before the lease must be given back"
    store.release_lease(f"concurrency:{locked_and_capped.name}", "another-run")
    assert isinstance(run(embedded, Envelope(job=locked_and_capped.name, queue=Q, kwargs={"account": 7})), Done)
    assert ran == [7]


# timeout and retry


def test_timeout_raises_jobtimeout_in_the_job_and_counts_as_a_failure(embedded: Embedded) -> None:
    outcome = run(embedded, Envelope(job=slow.name, queue=Q))
    assert ran == ["saw JobTimeout"], "stopped inside its loop, never finished"
    assert isinstance(outcome, Retry) and outcome.timed_out and outcome.error_type == "JobTimeout"
    [retry] = embedded.queued(Q)
    assert retry.attempt == 2
    assert isinstance(run(embedded, retry), Dead)


def test_timeout_also_reaches_a_job_in_a_worker_thread(embedded: Embedded) -> None:
    thread = in_thread(embedded, Envelope(job=slow.name, queue=Q))
    thread.join(5)
    assert ran == ["saw JobTimeout"]


def test_a_short_timeout_fires_while_a_job_with_a_long_one_runs(embedded: Embedded) -> None:
    # The timeout thread sleeps until the earliest deadline it knows of (60 s here); a later job's
    # 0.2 s deadline must wake it.
    release.clear()
    long_one = in_thread(embedded, Envelope(job=patient.name, queue=Q))
    try:
        wait_until(lambda: "patient started" in ran)
        in_thread(embedded, Envelope(job=slow.name, queue=Q)).join(5)
        assert "saw JobTimeout" in ran
    finally:
        release.set()
        long_one.join(5)
    assert "finished" not in ran


def test_a_short_timeout_fires_after_jobs_with_long_ones_finished(embedded: Embedded) -> None:
    # Once the jobs it watched are over, the timeout thread sleeps until the deadline of one of
    # them (the default timeout, minutes away) rather than being woken by every new job; an
    # earlier deadline must still wake it.
    for n in range(20):
        in_thread(embedded, Envelope(job=record.name, queue=Q, args=[n])).join(5)
    in_thread(embedded, Envelope(job=slow.name, queue=Q)).join(5)
    assert ran.count("saw JobTimeout") == 1


def test_retries_with_backoff_then_dead_letters_with_reason_and_body(embedded: Embedded) -> None:
    first = flaky.enqueue(7)
    assert first is not None
    body = embedded.engine.messages(Q)[0]
    embedded.engine.purge(Q)
    outcomes = []
    for attempt in (1, 2, 3):
        outcome = run(embedded, body)
        outcomes.append(outcome)
        assert outcome.envelope.attempt == attempt
        queued = embedded.engine.messages(Q, include_delayed=True)
        embedded.engine.purge(Q)
        if attempt < 3:
            assert isinstance(outcome, Retry) and outcome.delay == 0.05 * 2 ** (attempt - 1)
            assert outcome.error == "ConnectionError: flaky 7"
            [body] = queued
            assert decode(body).attempt == attempt + 1 and decode(body).id == first.id
        else:
            assert queued == []
    assert ran == [7, 7, 7]
    dead = outcomes[-1]
    assert isinstance(dead, Dead) and dead.reason == "failed on attempt 3 of 3: ConnectionError: flaky 7"
    [letter] = embedded.dead_letters(Q)
    assert letter.queue == f"{Q}-dead"
    assert letter.headers["reason"] == dead.reason
    assert letter.headers["job"] == "runner.flaky" and letter.headers["id"] == first.id
    original = decode(letter.headers["body"])
    assert (original.args, original.attempt) == ([7], 3)


def test_an_error_the_policy_does_not_retry_is_dead_at_once(embedded: Embedded) -> None:
    outcome = run(embedded, Envelope(job=fatal.name, queue=Q))
    assert isinstance(outcome, Dead) and outcome.reason == "failed on attempt 1 of 6: ValueError: bad data"
    assert outcome.error_type == "ValueError"
    assert ran == ["fatal"]
    assert embedded.queued(Q) == []
    assert len(embedded.dead_letters(Q)) == 1


def test_fail_killed_retries_or_dead_letters_per_policy(embedded: Embedded) -> None:
    outcome = embedded.runner.fail_killed(
        Envelope(job=slow.name, queue=Q).encode(), "killed after hard_timeout", timed_out=True
    )
    assert isinstance(outcome, Retry) and outcome.timed_out and outcome.error == "killed after hard_timeout"
    [retry] = embedded.queued(Q)
    assert retry.attempt == 2
    embedded.engine.purge(Q)
    outcome = embedded.runner.fail_killed(retry.encode(), "worker lost")
    assert isinstance(outcome, Dead) and outcome.error_type == "WorkerLost"
    assert embedded.dead_letters(Q)[0].headers["reason"] == "failed on attempt 2 of 2: worker lost"
    assert ran == []


def test_fail_killed_on_a_malformed_body_dead_letters_it(embedded: Embedded) -> None:
    outcome = embedded.runner.fail_killed("{oops", "worker lost", queue=Q)
    assert isinstance(outcome, Dead) and "malformed message" in outcome.reason
    assert embedded.dead_letters(Q)[0].headers["body"] == "{oops"


def test_a_dead_letter_of_a_malformed_envelope_still_names_its_job(embedded: Embedded) -> None:
    run(embedded, f'{{"id": "x", "job": "runner.record", "queue": "{Q}", "args": "oops"}}')
    assert embedded.dead_letters(Q)[0].headers["job"] == "runner.record"


# bad input


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("definitely not json", r"malformed message: message body is not JSON"),
        (f'{{"id": "x", "job": "runner.record", "queue": "{Q}", "args": "oops"}}', r"field 'args' has the wrong type"),
        (Envelope(job="runner.nope", queue=Q).encode(), r"unknown job 'runner\.nope'"),
        (
            Envelope(job=two_args.name, queue=Q, args=[1]).encode(),
            r"arguments do not match two_args\(a, b\): missing a required argument: 'b'",
        ),
        (Envelope(job=record.name, queue=Q, chain=[{"args": []}]).encode(), r"'chain' holds a malformed step"),
    ],
    ids=["not-json", "wrong-shape", "unknown-job", "wrong-args", "bad-chain"],
)
def test_bad_messages_are_dead_lettered_next_to_their_queue(embedded: Embedded, raw: str, reason: str) -> None:
    outcome = run(embedded, raw)
    assert isinstance(outcome, Dead)
    assert re.search(reason, outcome.reason), outcome.reason
    dead_queue = embedded.settings.default_queue if raw.startswith("definitely") else Q
    [letter] = embedded.dead_letters(dead_queue)
    assert letter.headers["body"] == raw
    assert letter.headers["reason"] == outcome.reason
    assert ran == []


def test_a_malformed_body_goes_to_the_dead_letters_of_the_queue_it_came_from(embedded: Embedded) -> None:
    outcome = embedded.runner.run("definitely not json", "imports")
    assert isinstance(outcome, Dead)
    assert [letter.headers["body"] for letter in embedded.dead_letters("imports")] == ["definitely not json"]


def test_a_chain_step_that_cannot_be_enqueued_is_dead_lettered_once(embedded: Embedded) -> None:
    envelope = Envelope(job=record.name, queue=Q, args=["first"], chain=[{"job": two_args.name, "args": [1]}])
    outcome = run(embedded, envelope)
    assert isinstance(outcome, Done) and ran == ["first"]
    [letter] = embedded.dead_letters(Q)
    assert letter.headers["reason"].startswith("chain step 'runner.two_args' cannot be enqueued: job 'runner.two_args'")
    assert embedded.queued(Q) == []


class SmallMessageEngine(MemoryEngine):
    """The embedded engine with a transport limit of 2,000 bytes."""

    facts = replace(MemoryEngine.facts, max_message_size=2_000)


def test_a_dead_letter_over_the_transport_limit_keeps_a_truncated_body(embedded: Embedded) -> None:
    engine = SmallMessageEngine(embedded.settings)
    runner = Runner(engine, embedded.settings, embedded.coordination)
    raw = Envelope(job="runner.nope", queue=Q, args=['"quoted"'] * 136, id="d" * 32, enqueued_at=1.5).encode()
    assert 1_900 < len(raw) <= 2_000
    assert isinstance(runner.run(raw), Dead)
    [body] = engine.messages(f"{Q}-dead")
    assert len(body) <= 2_000
    letter = decode(body)
    assert letter.headers["truncated"] is True and letter.headers["body_size"] == len(raw)
    assert raw.startswith(letter.headers["body"]) and len(letter.headers["body"]) > 500


def test_the_engine_keeps_running_after_bad_messages(embedded: Embedded) -> None:
    engine = embedded.engine
    engine.publish(
        [
            Envelope(job=record.name, queue=Q, args="not a list"),  # type: ignore[arg-type]
            Envelope(job="runner.nope", queue=Q),
            Envelope(job=two_args.name, queue=Q, args=[1]),
            Envelope(job=record.name, queue=Q, chain=[{"args": []}]),
        ]
    )
    record.enqueue("still alive")
    engine.start([Q], 2)
    assert engine.join(timeout=10)
    assert ran == ["still alive"]
    assert len(embedded.dead_letters(Q)) == 4


def test_a_message_whose_outcome_cannot_be_carried_out_is_put_back(embedded: Embedded) -> None:
    engine = embedded.engine
    calls: list[str] = []

    class FailsOnce:
        def run_item(self, raw: str | bytes, queue: str, **options: Any) -> Any:
            calls.append(raw if isinstance(raw, str) else raw.decode())
            if len(calls) == 1:
                raise ConnectionError("dead-letter queue unreachable")
            return embedded.runner.run_item(raw, queue, **options)

        def run(self, raw: str | bytes, queue: str | None = None) -> Any:
            return embedded.runner.run(raw, queue)

        def dead_letter(self, raw: str | bytes, reason: str, queue: str | None) -> Any:
            return embedded.runner.dead_letter(raw, reason, queue)

        def fail_killed(self, raw: str | bytes, reason: str, **options: Any) -> Any:
            return embedded.runner.fail_killed(raw, reason, **options)

    engine.declare(record.spec, FailsOnce())
    malformed = Envelope(job=record.name, queue=Q, args="not a list")  # type: ignore[arg-type]
    engine.publish([malformed])
    engine.start([Q], 1)
    wait_until(lambda: len(embedded.dead_letters(Q)) == 1)
    record.enqueue("after")
    assert engine.join(timeout=10)
    assert calls[0] == calls[1] == malformed.encode()
    assert ran == ["after"]


# unknown keyword arguments


def test_unknown_kwargs_are_dropped_with_a_warning(embedded: Embedded, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="taskbridge"):
        outcome = run(embedded, Envelope(job=two_args.name, queue=Q, kwargs={"a": 1, "b": 2, "added_later": 3}))
    assert isinstance(outcome, Done) and ran == [(1, 2)]
    assert "runner.two_args" in caplog.text and "dropping unknown keyword arguments added_later" in caplog.text


def test_a_job_that_opts_out_dead_letters_unknown_kwargs(embedded: Embedded) -> None:
    outcome = run(embedded, Envelope(job=strict.name, queue=Q, kwargs={"a": 1, "added_later": 3}))
    assert isinstance(outcome, Dead) and "unexpected keyword argument 'added_later'" in outcome.reason
    assert ran == []


# uniqueness


def test_unique_is_released_when_the_job_ends(embedded: Embedded) -> None:
    first = once.enqueue(user_id=1)
    assert first is not None
    assert once.enqueue(user_id=1) is None, "a twin while one is pending is refused"
    assert once.enqueue(2) is not None, "another key is independent"
    assert isinstance(run(embedded, first), Done)
    again = once.enqueue(1)
    assert again is not None, "after the job ended the key is free again"


def test_unique_is_kept_while_a_job_is_retried_and_released_when_it_is_dead(embedded: Embedded) -> None:
    first = unique_flaky.enqueue(1)
    assert first is not None
    assert unique_flaky.enqueue(n=1) is None, "unique=True compares the bound arguments: f(1) is f(n=1)"
    embedded.engine.purge(Q)
    assert isinstance(run(embedded, first), Retry)
    assert unique_flaky.enqueue(1) is None, "still pending while it waits for its retry"
    [retry] = embedded.queued(Q)
    assert isinstance(run(embedded, retry), Dead)
    assert unique_flaky.enqueue(1) is not None


# multi-process engines need a shared store


class MultiProcessEngine:
    """A stand-in for an engine that runs jobs in several processes; only its facts matter here."""

    name = "multi"
    facts = TransportFacts(max_native_delay=900, max_message_size=256 * 1024, multi_process=True)

    def __init__(self) -> None:
        self.declared: list[str] = []

    def declare(self, spec: JobSpec, runner: MessageRunner) -> None:
        self.declared.append(spec.name)

    def publish(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        raise AssertionError("nothing is published here")

    def work(self, queues: Sequence[str], concurrency: int) -> None:
        raise AssertionError("the worker must not start")

    def depth(self, queue: str) -> int:
        return 0

    def purge(self, queue: str) -> int:
        return 0

    def close(self) -> None:
        pass


def test_a_multi_process_engine_with_an_in_process_store_refuses_to_start(embedded: Embedded) -> None:
    engine = MultiProcessEngine()
    with pytest.raises(ConfigurationError) as caught:
        prepare(engine)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "runner.limited" in message and "runner.locked" in message and "runner.once" in message
    assert "runner.record" not in message
    assert "TASKBRIDGE_COORDINATION_URL=redis://" in message
    assert engine.declared == []


def test_a_multi_process_engine_is_fine_for_jobs_without_shared_state(embedded: Embedded) -> None:
    runner = Runner(MultiProcessEngine(), embedded.settings, embedded.coordination)  # type: ignore[arg-type]
    runner.check_jobs([record.spec, flaky.spec, slow.spec])
    with pytest.raises(ConfigurationError, match=r"runner\.capped"):
        runner.check_jobs([record.spec, capped.spec])


@pytest.mark.usefixtures("job_registry")
def test_a_hard_timeout_not_longer_than_the_default_timeout_is_refused_at_worker_start(embedded: Embedded) -> None:
    @job(name="runner.hard_below_default", hard_timeout=10)
    def hard_below_default() -> None: ...

    with pytest.raises(ConfigurationError, match=r"hard_below_default.*hard_timeout \(10s\).*timeout \(300s"):
        embedded.runner.check_jobs([hard_below_default.spec])


def test_a_run_killed_by_the_engine_gives_back_its_lock_but_not_a_lock_another_run_took(embedded: Embedded) -> None:
    from taskbridge.policies.base import owner_token

    killed = Envelope(job=locked.name, queue=Q, kwargs={"account": 7, "n": 1})
    store = embedded.coordination
    assert store.acquire_lock("lock:account:7", 60, owner_token(killed)) is not None
    embedded.runner.fail_killed(killed.encode(), "killed at its hard_timeout", timed_out=True)
    assert store.lock_ttl("lock:account:7") is None, "the killed run's lock should be free at once"

    other = store.acquire_lock("lock:account:7", 60)
    assert other is not None
    embedded.runner.fail_killed(killed.encode(), "killed at its hard_timeout", timed_out=True)
    assert store.lock_ttl("lock:account:7") is not None, "a lock held by another run must be kept"
