"""A message whose run finished does not run again when the transport hands it out again.

On SQS both copies are real SQS messages holding the same envelope (what SQS's at-least-once
delivery, or moto's lost delete, hands a worker), run by real worker processes of each engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Embedded, EmbeddedFactory, open_harness, unavailable

from taskbridge.envelope import Envelope
from taskbridge.outcomes import Defer, Done, Reason, Skip
from taskbridge.runner import Runner
from taskbridge.testing import KNOWN, Harness, jobs, unavailable_reason
from taskbridge.testing.harness import RawItem


@pytest.fixture(params=["celery-sqs", "dramatiq-sqs"])
def sqs_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    combination = KNOWN[request.param]
    reason = unavailable_reason(combination)
    if reason:
        unavailable(reason)
    harness = Harness(combination, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def _duplicates(harness: Harness, job: str) -> list[dict[str, object]]:
    return [e for e in harness.events("outcome:skipped", job) if e.get("reason") == Reason.DUPLICATE]


def test_a_copy_received_after_the_run_finished_is_acknowledged_unrun(sqs_harness: Harness) -> None:
    harness = sqs_harness
    envelope = Envelope(job=jobs.echo.name, queue=harness.queue, args=["once"]).encode()
    harness.start_workers(concurrency=2)
    harness.put_raw(RawItem("first copy", envelope.encode()))
    harness.wait_for(lambda: harness.events("ran", "echo"), 60, "the first copy never ran")
    harness.put_raw(RawItem("second copy", envelope.encode()))
    jobs.echo.enqueue("after")
    harness.wait_for(lambda: _duplicates(harness, "echo"), 60, "the second copy was not reported as a duplicate")
    harness.wait_for(lambda: len(harness.events("ran", "echo")) >= 2, 60, "the job behind the copy never ran")
    harness.wait_for(lambda: harness.depth(harness.queue) == 0, 60, "the copy stayed in the queue")
    assert sorted(e["args"][0] for e in harness.events("ran", "echo")) == ["after", "once"]


def test_two_copies_received_at_once_run_once(sqs_harness: Harness) -> None:
    harness = sqs_harness
    envelope = Envelope(job=jobs.sleepy.name, queue=harness.queue, args=[0.8]).encode()
    harness.put_raw(RawItem("first copy", envelope.encode()))
    harness.put_raw(RawItem("second copy", envelope.encode()))
    harness.start_workers(count=2, concurrency=2)
    # The copy that finds the other running is looked at again when its claim (one visibility
    # timeout, 10 s here) runs out or the run ends: then it is dropped as a duplicate.
    harness.wait_for(lambda: _duplicates(harness, "sleepy"), 90, "no copy was reported as a duplicate")
    harness.wait_for(lambda: harness.depth(harness.queue) == 0, 60, "a copy stayed in the queue")
    assert len(harness.events("started", "sleepy")) == 1, "both copies started"
    assert len(harness.events("ran", "sleepy")) == 1


def test_a_redelivered_message_runs_once_and_only_redeliveries_are_checked(embedded: Embedded) -> None:
    runner = embedded.runner
    raw = Envelope(job=jobs.echo.name, queue="default", args=["x"]).encode()
    assert isinstance(runner.run(raw, redelivered=True), Done)
    copy = runner.run(raw, redelivered=True)
    assert isinstance(copy, Skip) and copy.reason == Reason.DUPLICATE
    # Not flagged, on a transport that never hands out a finished message: not looked up.
    assert isinstance(runner.run(raw), Done)


def test_a_copy_of_a_running_delivery_is_deferred_and_a_deferral_gives_the_claim_back(embedded: Embedded) -> None:
    from taskbridge.duplicates import DeliveryClaim

    runner = embedded.runner
    envelope = Envelope(job=jobs.echo.name, queue="default", args=["y"])
    running = DeliveryClaim(embedded.coordination, 30.0)
    assert running.take(envelope) is None
    copy = runner.run(envelope.encode(), redelivered=True)
    assert isinstance(copy, Defer) and copy.reason == Reason.DUPLICATE_RUNNING and copy.delay > 20
    running.finish(Defer(envelope, 1.0, Reason.RATE_LIMIT))  # deferred: the next copy may claim it
    assert isinstance(runner.run(envelope.encode(), redelivered=True), Done)


@pytest.mark.parametrize("fact", ["flags_lost_acks", "delivers_finished_again"])
def test_a_finished_message_handed_out_again_is_not_run_again(embedded: Embedded, fact: str) -> None:
    from taskbridge.duplicates import FLUSH_EVERY

    embedded.engine.facts = dataclasses.replace(embedded.engine.facts, **{fact: True})
    runner = Runner(embedded.engine, embedded.settings, embedded.coordination)
    raw = Envelope(job=jobs.echo.name, queue="default", args=["z"]).encode()
    assert isinstance(runner.run(raw), Done)  # its finished mark is written in a batch
    time.sleep(4 * FLUSH_EVERY)
    # RabbitMQ flags a message whose acknowledgement was lost; SQS flags nothing.
    copy = runner.run(raw, redelivered=fact == "flags_lost_acks")
    assert isinstance(copy, Skip) and copy.reason == Reason.DUPLICATE
    other = Envelope(job=jobs.echo.name, queue="default", args=["never ran"]).encode()
    assert isinstance(runner.run(other, redelivered=True), Done), "a redelivered message that never finished runs"


def test_a_replayed_dead_letter_runs_although_its_id_and_attempt_finished(embedded: Embedded, tmp_path: Path) -> None:
    from taskbridge.dead import DeadLetters
    from taskbridge.duplicates import FLUSH_EVERY

    embedded.engine.facts = dataclasses.replace(embedded.engine.facts, delivers_finished_again=True)
    runner = Runner(embedded.engine, embedded.settings, embedded.coordination)
    marker = tmp_path / "fixed"
    raw = Envelope(job=jobs.fails_first.name, queue="default", args=[1], kwargs={"marker": str(marker)}).encode()
    assert runner.run(raw).kind == "dead"
    time.sleep(4 * FLUSH_EVERY)
    assert runner.run(raw).kind == "skipped", "the same delivery again"
    marker.touch()
    letters = DeadLetters(embedded.engine, embedded.settings)
    [letter] = [letter for batch in letters.scan("default") for letter in batch]
    assert letters.replay([letter]) == 1
    [replayed] = embedded.queued("default")
    assert isinstance(runner.run(replayed.encode()), Done)


def test_a_finished_mark_outlives_two_short_visibility_timeouts(make_embedded: EmbeddedFactory) -> None:
    """A copy deferred while the run went on comes back one visibility timeout later, later still on
    a loaded machine: the mark must still be there."""
    embedded = make_embedded(visibility_timeout=1)
    embedded.engine.facts = dataclasses.replace(embedded.engine.facts, delivers_finished_again=True)
    runner = Runner(embedded.engine, embedded.settings, embedded.coordination)
    raw = Envelope(job=jobs.echo.name, queue="default", args=["late copy"]).encode()
    assert isinstance(runner.run(raw), Done)
    time.sleep(3.0)
    copy = runner.run(raw)
    assert isinstance(copy, Skip) and copy.reason == Reason.DUPLICATE


def test_a_finished_celery_message_kombu_puts_back_on_redis_is_acknowledged_unrun(tmp_path: Path) -> None:
    """kombu's Redis channel puts back, flagged as redelivered, each message its worker had not
    acknowledged when it closes (a warm stop, a ``--reload`` restart); one whose run finished
    before the ack went out must not run again. The copy is written as kombu's restore writes it."""
    import json

    from taskbridge_celery.redis_batch import stored_messages

    with open_harness("celery-redis", tmp_path, "taskbridge.testing.jobs") as harness:
        envelope = Envelope(job=jobs.echo.name, queue=harness.queue, args=["once"])
        [(_, [stored])] = stored_messages([envelope], None)
        harness.start_workers()
        harness.put_raw(RawItem("first delivery", stored.encode()))
        harness.wait_for(lambda: harness.events("ran", "echo"), 60, "the message never ran")
        time.sleep(0.5)  # the finished mark is written within 50 ms of the run's end
        restored = json.loads(stored)
        restored["headers"]["redelivered"] = True
        restored["properties"]["delivery_info"]["redelivered"] = True
        harness.put_raw(RawItem("put back by kombu", json.dumps(restored).encode()))
        jobs.echo.enqueue("after")
        harness.wait_for(lambda: _duplicates(harness, "echo"), 60, "the copy was not reported as a duplicate")
        harness.wait_for(lambda: len(harness.events("ran", "echo")) >= 2, 60, "the job behind the copy never ran")
        assert sorted(e["args"][0] for e in harness.events("ran", "echo")) == ["after", "once"]
