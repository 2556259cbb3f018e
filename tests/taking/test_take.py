"""Engine.take: items come out without running, stay out until acknowledged, come back when released."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import open_harness

from taskbridge.dispatch import publish_dead_letter, schedule
from taskbridge.engine import settle
from taskbridge.envelope import Envelope
from taskbridge.testing import KNOWN

COMBINATIONS = sorted(KNOWN)


def _envelopes(queue: str, count: int) -> list[Envelope]:
    return [Envelope(job="taskbridge.testing.jobs.echo", queue=queue, args=[n]) for n in range(count)]


def _drain(harness, count: int, **options: bool) -> list:
    taken: list = []
    for _ in range(20):
        batch = harness.engine.take(harness.queue, count - len(taken), **options)
        taken.extend(batch)
        if len(taken) >= count or not batch:
            break
    return taken


@pytest.mark.parametrize("name", COMBINATIONS)
def test_taken_items_leave_the_queue_until_acknowledged_or_released(name: str, tmp_path: Path) -> None:
    with open_harness(name, tmp_path, "taskbridge.testing.jobs") as harness:
        engine = harness.engine
        envelopes = _envelopes(harness.queue, 6)
        schedule(engine, envelopes[:5], 0)
        if "sqs" not in name:  # SQS keeps a DelaySeconds message out of reach until it is due
            schedule(engine, envelopes[5:], 60)
        expected = 5 if "sqs" in name else 6

        taken = _drain(harness, expected + 1)
        assert len(taken) == expected
        assert all(item.body for item in taken)
        ids = {e.id for e in envelopes[:expected]}
        found = {i for i in ids for item in taken if i.encode() in item.body + _b64(item.body)}
        assert found == ids
        assert not harness.engine.take(harness.queue, 5)

        settle(taken[:2], ack=True)
        settle(taken[2:], ack=False)
        again = _drain(harness, expected)
        assert sorted(item.body for item in again) == sorted(item.body for item in taken[2:])
        settle(again, ack=True)
        assert not harness.engine.take(harness.queue, 5)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_dead_letters_are_taken_apart_from_waiting_jobs(name: str, tmp_path: Path) -> None:
    with open_harness(name, tmp_path, "taskbridge.testing.jobs") as harness:
        engine = harness.engine
        waiting, dead = _envelopes(harness.queue, 2)
        schedule(engine, [waiting], 0)
        publish_dead_letter(engine, queue=harness.queue, reason="testing", envelope=dead, raw=None)

        taken = _drain(harness, 2, dead_letters=True)
        assert len(taken) == 1 and dead.id.encode() in (taken[0].body + _b64(taken[0].body))
        settle(taken, ack=True)
        rest = _drain(harness, 2)
        assert len(rest) == 1 and waiting.id.encode() in (rest[0].body + _b64(rest[0].body))
        settle(rest, ack=True)


def _b64(body: bytes) -> bytes:
    """The body with its base64 layers opened (Dramatiq on SQS, kombu's Redis and SQS messages)."""
    import base64
    import binascii
    import json

    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        inner = json.loads(body).get("body")
        return base64.b64decode(inner) if isinstance(inner, str) else b""
    except (ValueError, AttributeError, binascii.Error):
        return b""
