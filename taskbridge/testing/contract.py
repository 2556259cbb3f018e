"""The contract: one test per promise of DESIGN.md, run unchanged on every engine x transport.

Run it with ``taskbridge contract --engine NAME --broker URL`` or
``pytest -p taskbridge.testing.plugin --pyargs taskbridge.testing.contract --taskbridge-engine NAME
--taskbridge-broker URL``. Each test gets a ``harness`` (see harness.py) with fresh queues.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import pickle
import random
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from taskbridge import (
    EnqueueError,
    Envelope,
    JobCancelled,
    JobExpired,
    JobFailed,
    configure,
    get_engine,
    get_job,
    get_settings,
)
from taskbridge.dispatch import max_delay
from taskbridge.signing import MISMATCH, MISSING, Signer

from . import jobs
from .harness import DEFAULT_COORDINATION, Harness, RawItem
from .proxy import TcpProxy

ROUND_TRIP = [1, -2.5, "zürich ✓", None, True, [1, [2, {"x": "y"}]], {"nested": {"list": [1, 2], "n": None}}]


def _publish_raw(harness: Harness, envelope: Envelope) -> None:
    """Publish an envelope as is, past enqueue's checks, as a faulty or newer producer would."""
    harness.engine.publish([envelope], 0)


def _ran(harness: Harness, job: str) -> list[dict[str, Any]]:
    return harness.events("ran", job)


def test_enqueue_run_and_arguments_round_trip(harness: Harness) -> None:
    harness.start_workers()
    envelope = jobs.echo.enqueue(*ROUND_TRIP, key="value", items=[{"a": 1}])
    assert envelope is not None and envelope.queue == harness.queue
    [ran] = harness.wait_for(lambda: _ran(harness, "echo"), 30, "echo never ran")
    assert ran["args"] == ROUND_TRIP
    assert ran["kwargs"] == {"key": "value", "items": [{"a": 1}]}
    [done] = harness.wait_for(lambda: harness.events("outcome:done", "echo"), 10, "no done outcome")
    assert done["id"] == envelope.id and done["attempt"] == 1


def test_enqueue_many_runs_each_call_once(harness: Harness) -> None:
    count = jobs.echo.enqueue_many(((i,) for i in range(120)), batch_size=25)
    assert count == 120
    harness.start_workers()
    harness.wait_for(lambda: len(_ran(harness, "echo")) >= 120, 60, "not every enqueue_many call ran")
    time.sleep(1.0)
    values = sorted(event["args"][0] for event in _ran(harness, "echo"))
    assert values == list(range(120))


def test_enqueue_rejects_arguments_that_are_not_json(harness: Harness) -> None:
    with pytest.raises(EnqueueError, match=r"echo.*argument 'when'"):
        jobs.echo.enqueue(when=object())
    with pytest.raises(EnqueueError, match=r"two_args.*arguments do not match"):
        jobs.two_args.enqueue(1)
    assert harness.depth(harness.queue) == 0


def test_enqueue_rejects_a_message_over_the_transport_limit(harness: Harness) -> None:
    too_big = "x" * harness.engine.facts.max_message_size
    with pytest.raises(EnqueueError, match=r"echo.*bytes, over the"):
        jobs.echo.enqueue(too_big)
    assert harness.depth(harness.queue) == 0


def test_timeout_raises_jobtimeout_in_the_job_then_retries_and_dead_letters(harness: Harness) -> None:
    harness.start_workers()
    jobs.sleepy.enqueue(10)
    harness.wait_for(lambda: harness.events("outcome:dead", "sleepy"), 40, "timed-out job was not dead-lettered")
    assert len(harness.events("saw_timeout", "sleepy")) == 2, "each of the 2 attempts should see JobTimeout"
    assert not _ran(harness, "sleepy")
    [retried] = harness.events("outcome:retried", "sleepy")
    assert retried["timed_out"] is True
    harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 15, "dead-letter queue should hold it")


def test_expired_job_never_runs(harness: Harness) -> None:
    stale = jobs.echo.options(expires=1).enqueue("stale")
    time.sleep(2.0)
    harness.start_workers()
    jobs.echo.enqueue("fresh")
    harness.wait_for(lambda: _ran(harness, "echo"), 30, "the fresh job never ran")
    [expired] = harness.wait_for(lambda: harness.events("outcome:expired", "echo"), 10, "no expired outcome")
    assert stale is not None and expired["id"] == stale.id
    assert [e["args"] for e in _ran(harness, "echo")] == [["fresh"]]


def test_backoff_gaps_follow_the_policy_then_dead_letter(harness: Harness) -> None:
    harness.start_workers()
    jobs.flaky.enqueue("t1")
    harness.wait_for(lambda: harness.events("outcome:dead", "flaky"), 60, "flaky never reached the dead letters")
    times = [e["time"] for e in harness.events("attempt", "flaky")]
    assert len(times) == 4, "max_retries=3 means 4 attempts"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [1.0, 2.0, 4.0], strict=True):
        assert expected - 0.05 <= gap <= expected + 1.5, f"gaps {gaps} do not follow base 1s doubling"
    harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 15, "dead-letter queue should hold it")


def test_error_not_in_retry_on_goes_straight_to_dead_letters(harness: Harness) -> None:
    harness.start_workers()
    jobs.fatal.enqueue("t2")
    harness.wait_for(lambda: harness.events("outcome:dead", "fatal"), 30, "fatal was not dead-lettered")
    assert len(harness.events("attempt", "fatal")) == 1


def test_lock_never_lets_two_run_at_once(harness: Harness) -> None:
    jobs.locked.enqueue_many({"key": "k", "hold": 0.3, "n": n} for n in range(6))
    harness.start_workers(count=2, concurrency=3)
    harness.wait_for(lambda: len(_ran(harness, "locked")) >= 6, 90, "not every locked job ran")
    runs = sorted((e["start"], e["end"]) for e in _ran(harness, "locked"))
    assert sorted(e["n"] for e in _ran(harness, "locked")) == list(range(6))
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end - 0.005, f"two runs held the lock at once: {runs}"
    assert harness.events("outcome:deferred", "locked"), "contention should have deferred some runs"


def test_lock_with_skip_drops_runs_while_held(harness: Harness) -> None:
    harness.start_workers(count=2, concurrency=2)
    jobs.skipping.enqueue(key="s", hold=3.0, n=0)
    harness.wait_for(lambda: harness.events("started", "skipping"), 30, "first run never started")
    jobs.skipping.enqueue(key="s", hold=0.0, n=1)
    harness.wait_for(lambda: harness.events("outcome:skipped", "skipping"), 30, "second run was not skipped")
    harness.wait_for(lambda: _ran(harness, "skipping"), 30, "first run never finished")
    assert [e["n"] for e in _ran(harness, "skipping")] == [0]


def test_rate_limit_holds_across_workers(harness: Harness) -> None:
    jobs.limited.enqueue_many((n,) for n in range(40))
    harness.start_workers(count=2, concurrency=2)
    harness.wait_for(lambda: len(_ran(harness, "limited")) >= 40, 90, "not every rate-limited job ran")
    times = sorted(e["time"] for e in _ran(harness, "limited"))
    assert sorted(e["n"] for e in _ran(harness, "limited")) == list(range(40))
    span = times[-1] - times[0]
    assert 39 / span <= 10, f"observed {39 / span:.1f}/s over {span:.1f}s, limit is 10/s"
    # Any window of one second, ends included, as each run read the time when it started.
    busiest = max(sum(1 for t in times if start <= t <= start + 1.0) for start in times)
    assert busiest <= 10, f"{busiest} runs within one second, limit is 10/s"


HOP_SLACK = 8.0
"""Seconds a hop of a delayed message may take beyond the delay the transport holds it for: the
broker delivering it again and a worker taking it, on a loaded machine."""


def test_countdown_longer_than_the_transport_holds_runs_once_on_time(harness: Harness) -> None:
    """A countdown longer than the transport holds natively, and longer than a worker may keep a
    message unacknowledged before the broker delivers it again (the visibility timeout), runs once,
    not before it is due, on time. While it waits the message hops: a worker hands it back to the
    broker at least every hop bound, so none holds it long enough for the broker to give it to a
    second worker (the duplicate Celery users meet on Redis and SQS)."""
    settings = get_settings()
    hop = max_delay(harness.engine, settings)
    bound = hop + HOP_SLACK
    # Long enough that a message held for the whole countdown breaks the bound by seconds.
    countdown = max(bound + 4.0, min(settings.visibility_timeout + 2.0, 30.0))
    assert countdown <= 60, (
        f"the case needs a native delay of a few seconds (TASKBRIDGE_MAX_NATIVE_DELAY), not {hop:g}s"
    )
    harness.start_workers(count=2)
    sent = time.time()
    envelope = jobs.echo.options(countdown=countdown).enqueue("later")
    assert envelope is not None
    [ran] = harness.wait_for(lambda: _ran(harness, "echo"), countdown + 40, "delayed job never ran")
    assert sent + countdown - 0.05 <= ran["time"] <= sent + countdown + 3.0, (
        f"ran {ran['time'] - sent:.2f}s after enqueue, countdown was {countdown}s"
    )
    handed_back = sorted(e["time"] for e in harness.events("outcome:deferred") if e.get("id") == envelope.id)
    marks = [sent, *handed_back, ran["time"]]
    held = max(later - earlier for earlier, later in itertools.pairwise(marks))
    assert held <= bound, (
        f"the message stayed {held:.1f}s with a worker or the broker without hopping "
        f"(hop bound {hop:g}s; handed back {len(handed_back)} times in {countdown:g}s)"
    )
    time.sleep(4.0)
    assert len(_ran(harness, "echo")) == 1, "the delayed job ran more than once"


def test_bad_messages_go_to_dead_letters_and_the_worker_survives(harness: Harness) -> None:
    harness.start_workers()
    queue = harness.queue
    wrong_shape = Envelope(job=jobs.echo.name, queue=queue, args="not a list")  # type: ignore[arg-type]
    unknown = Envelope(job="taskbridge.testing.jobs.no_such_job", queue=queue)
    wrong_args = Envelope(job=jobs.two_args.name, queue=queue, args=[1])
    for envelope in (wrong_shape, unknown, wrong_args):
        _publish_raw(harness, envelope)
    harness.wait_for(lambda: len(harness.events("outcome:dead")) >= 3 or None, 30, "bad messages not dead-lettered")
    jobs.echo.enqueue("still alive")
    harness.wait_for(lambda: _ran(harness, "echo"), 30, "the worker stopped working after bad messages")
    harness.wait_for(lambda: harness.depth(harness.dead_queue) == 3, 15, "dead-letter queue should hold all 3")
    assert not _ran(harness, "two_args")


def test_unknown_keyword_arguments_are_dropped_unless_the_job_opts_out(harness: Harness) -> None:
    harness.start_workers()
    queue = harness.queue
    _publish_raw(harness, Envelope(job=jobs.two_args.name, queue=queue, kwargs={"a": 1, "b": 2, "added_later": 3}))
    _publish_raw(harness, Envelope(job=jobs.strict.name, queue=queue, kwargs={"a": 1, "added_later": 3}))
    [ran] = harness.wait_for(lambda: _ran(harness, "two_args"), 30, "tolerant job did not run")
    assert (ran["a"], ran["b"]) == (1, 2)
    harness.wait_for(lambda: harness.events("outcome:dead", "strict"), 30, "strict job was not dead-lettered")
    assert not _ran(harness, "strict")


@pytest.mark.processes
def test_a_job_whose_worker_is_killed_runs_again(harness: Harness) -> None:
    token = uuid.uuid4().hex
    marker = harness.workdir / f"crashy-{token}"
    harness.start_workers()
    jobs.crashy.enqueue(token, str(marker))
    harness.wait_for(lambda: harness.events("started", "crashy"), 40, "crashy never started")
    harness.kill_workers()
    assert not _ran(harness, "crashy")
    harness.start_workers()
    [ran] = harness.wait_for(lambda: _ran(harness, "crashy"), 90, "the killed job never ran again")
    assert ran["token"] == token


class _CreatesFileWhenUnpickled:
    """A pickle payload whose unpickling creates a file: proof that a worker deserialized it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _wire_items(harness: Harness, marker: Path) -> list[RawItem]:
    queue = harness.queue
    valid = Envelope(job=jobs.echo.name, queue=queue, args=["never"]).encode()
    limit = harness.engine.facts.max_message_size
    oversized = Envelope(job=jobs.echo.name, queue=queue, args=["x" * (limit + 1)]).encode()
    bad_envelope = json.dumps({"id": "bad", "job": jobs.echo.name, "queue": queue, "args": "not a list"})
    unknown = Envelope(job="taskbridge.testing.jobs.no_such_job", queue=queue).encode()
    return [
        RawItem("random bytes", random.Random(16).randbytes(96)),
        RawItem("not UTF-8", b'{"job": "\xff\xfe\xfd", "id": 1}'),
        RawItem("truncated JSON", valid[: len(valid) // 2].encode()),
        RawItem("bare JSON string", b'"hello"'),
        RawItem("bare JSON number", b"42"),
        RawItem("bare JSON array", b"[1, 2, 3]"),
        RawItem("JSON null", b"null"),
        RawItem(
            "pickle",
            pickle.dumps(_CreatesFileWhenUnpickled(marker), protocol=2),
            content_type="application/x-python-serialize",
        ),
        RawItem("oversized envelope", oversized.encode()),
        RawItem("bad envelope", bad_envelope.encode()),
        RawItem("unknown job", unknown.encode()),
        *harness.engine_items(valid),
    ]


def test_any_bytes_in_the_queue_end_in_dead_letters_and_the_worker_keeps_going(harness: Harness) -> None:
    if not harness.writes_raw:
        pytest.skip(f"engine {harness.engine.name!r} offers no raw writer (package 'testing' module)")
    marker = harness.workdir / f"unpickled-{uuid.uuid4().hex}"
    items = _wire_items(harness, marker)
    harness.start_workers(concurrency=1)
    jobs.echo.enqueue("first")
    harness.wait_for(lambda: _ran(harness, "echo"), 40, "the first valid job never ran")
    pids = {event["pid"] for event in _ran(harness, "echo")}
    for index, item in enumerate(items):
        harness.put_raw(item)
        jobs.echo.enqueue(index)
    jobs.echo.enqueue("last")
    expected = ["first", *range(len(items)), "last"]
    harness.wait_for(
        lambda: len(_ran(harness, "echo")) >= len(expected), 120, "valid jobs behind the bad items did not all run"
    )
    harness.wait_for(
        lambda: harness.depth(harness.dead_queue) >= len(items),
        60,
        f"the dead-letter queue should hold all {len(items)} bad items: {[i.label for i in items]}",
    )
    time.sleep(2.0)
    ran = [event["args"][0] for event in _ran(harness, "echo")]
    assert sorted(map(str, ran)) == sorted(map(str, expected)), "every valid job runs exactly once"
    assert harness.depth(harness.dead_queue) == len(items), "each bad item is dead-lettered exactly once"
    assert harness.depth(harness.queue) == 0, "nothing is left behind in the queue"
    assert not marker.exists(), "a pickle body was deserialized"
    assert {event["pid"] for event in _ran(harness, "echo")} == pids, "the worker process was replaced"


SIGNING_KEY = "contract-signing-key-2"
OLD_SIGNING_KEY = "contract-signing-key-1"


def _dead_reasons(harness: Harness) -> list[str]:
    return sorted(event["reason"] for event in harness.events("outcome:dead", "echo"))


def _echoed(harness: Harness) -> list[str]:
    return sorted(str(event["args"][0]) for event in _ran(harness, "echo"))


@pytest.mark.harness_settings({"TASKBRIDGE_SIGNING_KEY": SIGNING_KEY})
def test_signed_jobs_run_and_unsigned_or_tampered_messages_are_dead_lettered_unrun(harness: Harness) -> None:
    harness.start_workers(concurrency=1)
    jobs.echo.enqueue("signed")
    harness.wait_for(lambda: _ran(harness, "echo"), 40, "a signed job never ran")
    _publish_raw(harness, Envelope(job=jobs.echo.name, queue=harness.queue, args=["unsigned"]))
    signed = Signer(SIGNING_KEY).sign(Envelope(job=jobs.echo.name, queue=harness.queue, args=["pay 10"]))
    _publish_raw(harness, signed.with_changes(args=["pay 99"]))
    jobs.echo.enqueue("last")
    harness.wait_for(lambda: len(_dead_reasons(harness)) >= 2, 40, "the bad messages were not dead-lettered")
    harness.wait_for(lambda: harness.depth(harness.dead_queue) == 2, 15, "the dead-letter queue should hold both")
    harness.wait_for(lambda: len(_ran(harness, "echo")) >= 2, 40, "the job after the bad messages never ran")
    time.sleep(1.0)
    assert _dead_reasons(harness) == sorted([MISSING, MISMATCH])
    assert _echoed(harness) == ["last", "signed"], "an unsigned or tampered message ran"


@pytest.mark.harness_settings(
    {"TASKBRIDGE_SIGNING_KEY": SIGNING_KEY, "TASKBRIDGE_SIGNING_KEYS_ACCEPTED": OLD_SIGNING_KEY}
)
def test_during_a_key_rotation_messages_signed_with_the_old_key_still_run(harness: Harness) -> None:
    before = Envelope(job=jobs.echo.name, queue=harness.queue, args=["old key"])
    _publish_raw(harness, Signer(OLD_SIGNING_KEY).sign(before))
    jobs.echo.enqueue("new key")
    stranger = Envelope(job=jobs.echo.name, queue=harness.queue, args=["unknown key"])
    _publish_raw(harness, Signer("contract-signing-key-x").sign(stranger))
    harness.start_workers(concurrency=1)
    harness.wait_for(lambda: len(_ran(harness, "echo")) >= 2, 40, "the old- and new-key jobs did not both run")
    harness.wait_for(lambda: _dead_reasons(harness), 40, "a message signed with an unknown key was not dead-lettered")
    time.sleep(1.0)
    assert _echoed(harness) == ["new key", "old key"]
    assert _dead_reasons(harness) == [MISMATCH]


# -- job handles: status, result, cancel (issue 13) -------------------------------------------


def test_status_moves_queued_running_done_and_result_crosses_processes(harness: Harness) -> None:
    release = harness.workdir / f"release-{uuid.uuid4().hex}"
    ref = jobs.tracked.enqueue("v1", str(release))
    assert ref is not None and ref.status() == "queued"
    harness.start_workers()
    harness.wait_for(lambda: ref.status() == "running", 40, "the tracked job never showed running")
    assert ref.attempts == 1 and ref.started_at is not None
    release.touch()
    result = ref.result(timeout=40)
    assert result["value"] == "v1"
    assert harness.multi_process == (result["pid"] != os.getpid()), "the result comes from the worker's process"
    again = get_job(ref.id)
    assert again.status() == "done" and again.finished_at is not None and again.result() == result


def test_a_failing_job_shows_failed_then_dead_with_its_error(harness: Harness) -> None:
    harness.start_workers()
    ref = jobs.tracked_failing.enqueue("t3")
    assert ref is not None
    harness.wait_for(lambda: ref.status() == "failed", 40, "the failing job never showed failed")
    assert ref.error is not None and ref.error.type == "OSError"
    harness.wait_for(lambda: ref.status() == "dead", 40, "the failing job never showed dead")
    assert ref.attempts == 2
    assert ref.error is not None and ref.error.message == "tracked_failing t3 failed on purpose"
    with pytest.raises(JobFailed, match="failed on purpose") as failed:
        ref.result(timeout=5)
    assert failed.value.error_type == "OSError" and "OSError" in (failed.value.traceback or "")


def test_a_delayed_job_shows_scheduled(harness: Harness) -> None:
    harness.start_workers()
    ref = jobs.tracked.options(countdown=60).enqueue("later")
    assert ref is not None and ref.status() == "scheduled"
    time.sleep(3.0)
    assert ref.status() == "scheduled", "a delay hop is not a run"
    assert not _ran(harness, "tracked")


def test_cancel_before_start_means_the_body_never_runs(harness: Harness) -> None:
    ref = jobs.tracked.enqueue("cancelled")
    assert ref is not None
    ref.cancel()
    assert ref.status() == "cancelled"
    harness.start_workers()
    harness.wait_for(lambda: harness.events("outcome:skipped", "tracked"), 40, "the cancelled job was not skipped")
    after = jobs.tracked.enqueue("after")
    assert after is not None and after.result(timeout=40)["value"] == "after"
    assert [e["value"] for e in _ran(harness, "tracked")] == ["after"], "the cancelled body ran"
    with pytest.raises(JobCancelled):
        get_job(ref.id).result(timeout=5)


def test_an_expired_job_shows_expired(harness: Harness) -> None:
    ref = jobs.tracked.options(expires=1).enqueue("stale")
    assert ref is not None
    time.sleep(2.0)
    assert ref.status() == "expired", "past its expiry it will never run"
    harness.start_workers()
    harness.wait_for(lambda: harness.events("outcome:expired", "tracked"), 40, "no expired outcome")
    harness.wait_for(lambda: ref.refresh() and ref.finished_at is not None, 10, "the worker did not record it")
    assert ref.status() == "expired" and not _ran(harness, "tracked")
    with pytest.raises(JobExpired):
        ref.result(timeout=5)


def test_with_the_store_unreachable_enqueue_works_and_status_is_unknown(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = urlsplit(harness.env.get("TASKBRIDGE_COORDINATION_URL", DEFAULT_COORDINATION))
    proxy = TcpProxy(store.hostname or "127.0.0.1", store.port or 6379)
    try:
        through_proxy = proxy.url(store.geturl())
        harness.env["TASKBRIDGE_COORDINATION_URL"] = through_proxy
        monkeypatch.setenv("TASKBRIDGE_COORDINATION_URL", through_proxy)
        configure()
        harness.engine = get_engine()
        harness.start_workers()
        before = jobs.tracked.enqueue("before")
        assert before is not None and before.result(timeout=40)["value"] == "before"
        proxy.cut()
        ref = jobs.tracked.enqueue("unseen")
        assert ref is not None and ref.status() == "unknown"
        harness.wait_for(
            lambda: [e for e in _ran(harness, "tracked") if e["value"] == "unseen"],
            60,
            "the job was lost because tracking failed",
        )
        assert ref.status() == "unknown"
    finally:
        harness.stop_workers()
        proxy.close()


# -- workflows: chains that pass results, groups with a callback (fan-in) ----------------------


def test_a_chain_passes_each_result_to_the_next_step(harness: Harness) -> None:
    from taskbridge.compat import chain

    harness.start_workers()
    chain(jobs.extract.s(7), jobs.transform.s(factor=10), jobs.load.s(tag="t"), jobs.load.si("end", tag="si")).enqueue()
    loads = harness.wait_for(lambda: len(_ran(harness, "load")) == 2 and _ran(harness, "load"), 60, "chain never ended")
    [transformed] = _ran(harness, "transform")
    assert transformed["data"] == {"account": 7, "rows": [1, 2, 3]}
    assert [(e["total"], e["tag"]) for e in loads] == [(60, "t"), ("end", "si")]


def test_a_chain_step_returning_no_json_is_dead_lettered_and_the_rest_never_runs(harness: Harness) -> None:
    harness.start_workers()
    jobs.opaque.s().then(jobs.load.s()).enqueue()
    [dead] = harness.wait_for(lambda: harness.events("outcome:dead", "opaque"), 60, "step was not dead-lettered")
    assert "'taskbridge.testing.jobs.opaque' returned a set, which is not JSON" in dead["reason"]
    harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 15, "dead-letter queue should hold it")
    time.sleep(1.0)
    assert not _ran(harness, "load")


def test_a_dead_chain_step_keeps_the_rest_and_replaying_it_resumes_the_chain(harness: Harness, tmp_path: Path) -> None:
    from taskbridge.dead import DeadLetters

    marker = tmp_path / "fixed"
    harness.start_workers()
    jobs.extract.s(3).then(jobs.fails_first.s(marker=str(marker))).then(jobs.transform.s()).then(
        jobs.load.s()
    ).enqueue()
    harness.wait_for(lambda: harness.events("outcome:dead", "fails_first"), 60, "the step never died")
    harness.wait_for(lambda: harness.depth(harness.dead_queue) == 1, 15, "dead-letter queue should hold it")
    time.sleep(1.0)
    assert not _ran(harness, "transform") and not _ran(harness, "load")
    letters = DeadLetters(harness.engine, get_settings())
    [letter] = [letter for batch in letters.scan(harness.queue) for letter in batch]
    failed = letter.envelope()
    assert failed is not None and [step["job"].rsplit(".", 1)[1] for step in failed.chain] == ["transform", "load"]
    marker.touch()
    assert letters.replay([letter]) == 1
    [loaded] = harness.wait_for(lambda: _ran(harness, "load"), 60, "the replayed chain never resumed")
    assert loaded["total"] == 6


def test_a_group_callback_runs_once_with_the_counts_when_all_ended(harness: Harness) -> None:
    from taskbridge.workflows import group

    harness.start_workers(count=2)
    ref = group((jobs.part.s(i) for i in range(1, 41)), batch_size=9).then(jobs.tally.s("g")).enqueue()
    assert ref.total == 40
    [tallied] = harness.wait_for(lambda: _ran(harness, "tally"), 90, "the group's callback never ran")
    assert tallied["label"] == "g"
    assert tallied["counts"] == {"total": 40, "done": 32, "dead": 8, "expired": 0, "skipped": 0}
    assert sorted(e["i"] for e in _ran(harness, "part")) == list(range(1, 41))
    time.sleep(2.0)
    assert len(_ran(harness, "tally")) == 1, "the callback ran more than once"


# -- periodic jobs --------------------------------------------------------------------------


def test_two_schedulers_fire_each_run_of_a_periodic_job_once_with_its_scheduled_time(harness: Harness) -> None:
    harness.start_workers()
    harness.start_schedulers(count=2)
    harness.wait_for(lambda: len(_ran(harness, "tick")) >= 3, 60, "the every-second job did not run 3 times")
    harness.stop_schedulers()
    fired = harness.events("outcome:scheduled", "tick")
    harness.wait_for(lambda: len(_ran(harness, "tick")) >= len(fired), 30, "a fired run never ran")
    times = [event["scheduled_at"] for event in fired]
    assert len(times) == len(set(times)), f"a run was fired twice: {sorted(times)}"
    ran = sorted(event["scheduled_at"] for event in _ran(harness, "tick"))
    assert ran == sorted(times), "each run received the scheduled time it was fired for"
    seconds = sorted(dt.datetime.fromisoformat(t).timestamp() for t in times)
    assert all(s == int(s) for s in seconds), f"every('1s') runs fall on whole seconds: {times}"


# -- workflows: chunked fan-out --------------------------------------------------------------

FAN_OUT_IDS = os.environ.get("TASKBRIDGE_CONTRACT_FANOUT_IDS")
"""How many ids the fan-out case walks (the issue's figure is 200,000; by default 10,000, and 2,000 on
SQS, where moto answers each receive in about 0.4 s). The chunk is a fortieth of it and
``max_depth`` four chunks."""


def _visited(harness: Harness) -> set[Any]:
    """The distinct items the fan-out's jobs were run with (a message delivered twice counts once)."""
    return {event["item"] for event in _ran(harness, "visit")}


@pytest.mark.timeout(900)  # thousands of jobs, and a dispatcher killed and replaced, on a loaded machine
def test_fan_out_respects_max_depth_visits_each_id_once_and_survives_a_killed_dispatcher(harness: Harness) -> None:
    import collections
    import signal
    import threading

    from taskbridge.workflows import fan_out, ids, progress

    sqs = urlsplit(harness.combination.broker_url).scheme == "sqs"
    count = int(FAN_OUT_IDS) if FAN_OUT_IDS else (2_000 if sqs else 10_000)
    chunk = max(1, count // 40)  # 20,000 ids: chunks of 500 and a bound of 2,000
    max_depth = 4 * chunk
    dispatch_queue = f"{harness.queue}_fan"
    dispatcher = None
    if harness.multi_process:
        harness.start_workers(count=2, concurrency=4)
        harness.start_workers(queues=[dispatch_queue], concurrency=1, args=["--any-queue"])
        dispatcher = harness.workers[-1]
    else:
        harness.start_workers(queues=[harness.queue, dispatch_queue], concurrency=4)
    depths: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            depths.append(harness.depth(harness.queue))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        ref = fan_out(
            jobs.visit,
            ids(1, count),
            chunk=chunk,
            max_depth=max_depth,
            recheck="200ms",
            lease="3s",
            queue=dispatch_queue,
        )
        if dispatcher is not None:
            harness.wait_for(lambda: (progress(ref.id) or {})["chunks"] >= (ref.total_chunks or 0) // 2, 300, "half")
            os.killpg(dispatcher.pid, signal.SIGKILL)  # the dispatcher only: the jobs' workers keep running
            dispatcher.wait(10)
            harness.workers.remove(dispatcher)
            harness.start_workers(queues=[dispatch_queue], concurrency=1, args=["--any-queue"])
        harness.wait_for(lambda: (progress(ref.id) or {}).get("finished"), 600, "the fan-out never finished")
        harness.wait_for(lambda: len(_visited(harness)) >= count, 600, "not every id was visited")
        time.sleep(2.0)
    finally:
        sampling.set()
        sampler.join()
    visits = collections.Counter(event["item"] for event in _ran(harness, "visit"))
    assert sorted(visits) == list(range(1, count + 1)), "an id was never visited"
    twice = sorted(item for item, times in visits.items() if times > 1)
    # A chunk published twice whose copies both ran would show as more messages run than ids.
    messages = {event["id"] for event in harness.events("outcome:started", "visit")}
    assert len(messages) == count, f"{len(messages) - count} ids ran from a second copy (ids run twice: {twice[:5]})"
    # SQS hands out a finished message again at times (moto's server loses deletes, SQS is at least
    # once): the runner's finished marks keep it from running twice (taskbridge.duplicates).
    assert not twice, f"{len(twice)} ids were visited more than once (first: {twice[:5]})"
    assert max(depths) <= max_depth + chunk, f"the queue held {max(depths)} jobs"
    done = progress(ref.id)
    assert done is not None and done["items"] == count and done["chunks"] == ref.total_chunks
