"""Events: typed per kind, read by attribute; their dict form is the JSON the events log always had."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from support import Embedded

from taskbridge import events, job
from taskbridge.outcomes import Reason

Q = "events"


@job(name="events.fails", queue=Q)
def fails(n: int) -> None:
    raise ValueError(f"no {n}")


@job(name="events.adds", queue=Q)
def adds(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def seen() -> Iterator[list[events.Event]]:
    got: list[events.Event] = []
    events.subscribe(got.append)
    yield got
    events.unsubscribe(got.append)


def _run_all(embedded: Embedded) -> None:
    for body in embedded.engine.messages(Q):
        embedded.runner.run(body, Q)


def test_each_kind_is_its_own_class_read_by_attribute(embedded: Embedded, seen: list[events.Event]) -> None:
    ok = adds.enqueue(1, 2)
    bad = fails.enqueue(3)
    assert ok is not None and bad is not None
    _run_all(embedded)
    kinds = [(type(e), getattr(e, "job", None)) for e in seen]
    assert kinds == [
        (events.EnqueuedEvent, "events.adds"),
        (events.EnqueuedEvent, "events.fails"),
        (events.StartedEvent, "events.adds"),
        (events.DoneEvent, "events.adds"),
        (events.StartedEvent, "events.fails"),
        (events.DeadEvent, "events.fails"),
    ]
    done = seen[3]
    assert isinstance(done, events.DoneEvent)
    assert (done.id, done.attempt, done.queue, done.pid) == (ok.id, 1, Q, os.getpid())
    dead = seen[5]
    assert isinstance(dead, events.DeadEvent)
    assert (dead.id, dead.error_type, dead.timed_out) == (bad.id, "ValueError", False)
    assert "ValueError: no 3" in dead.reason


def test_the_dict_form_is_the_json_events_always_were(embedded: Embedded, seen: list[events.Event]) -> None:
    sent = adds.options(queue=Q).enqueue(1, 2)
    assert sent is not None
    _run_all(embedded)
    done = seen[-1]
    data = json.loads(json.dumps(done.as_dict()))
    assert data == {
        "event": "done",
        "time": done.time,
        "pid": os.getpid(),
        "job": "events.adds",
        "id": sent.id,
        "attempt": 1,
        "queue": Q,
        "enqueued_at": sent.enqueued_at,
        "not_before": None,
        "duration": done["duration"],
    }
    assert json.loads(json.dumps(seen[0].as_dict())) == {
        "event": "enqueued",
        "time": seen[0].time,
        "pid": os.getpid(),
        "job": "events.adds",
        "queue": Q,
        "count": 1,
        "delay": 0.0,
    }


def test_code_written_for_dict_events_still_reads_them() -> None:
    event = events.DeferredEvent(job="j", id="1", attempt=2, queue="q", delay=1.5, reason=Reason.LOCK_BUSY)
    assert event["event"] == "deferred" and event["job"] == "j" and event.get("reason") == "lock busy"
    assert event.get("error_type") is None and event.get("error_type", "none") == "none"
    assert "delay" in event and "error" not in event
    with pytest.raises(KeyError):
        event["error"]


def test_a_dead_item_with_no_envelope_names_only_its_job_and_queue(
    embedded: Embedded, seen: list[events.Event]
) -> None:
    embedded.runner.run('{"job": "events.adds", "queue": "events", "args": "not a list"}', Q)
    [dead] = seen
    assert isinstance(dead, events.DeadEvent) and dead.id is None
    assert (dead.job, dead.queue) == ("events.adds", Q)
    assert set(dead.as_dict()) == {
        "event",
        "time",
        "pid",
        "job",
        "queue",
        "duration",
        "reason",
        "error_type",
        "timed_out",
    }


def test_events_are_frozen() -> None:
    event = events.SkippedEvent(job="j", reason=Reason.CANCELLED)
    with pytest.raises(AttributeError):
        event.job = "k"  # type: ignore[misc]
