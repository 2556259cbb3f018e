"""``enqueue_many`` on Redis writes a batch and builds the next one while Redis stores it: every call
is stored once, in order, and a batch Redis refuses or a bad call is reported with the right count
of calls published before it."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import backlog_jobs as jobs
import pytest
import redis
from support import open_harness

from taskbridge import EnqueueError, PublishError, get_settings
from taskbridge.engine import settle
from taskbridge.envelope import decode
from taskbridge.testing import Harness
from taskbridge.wire import unwrap

COMBINATIONS = ["celery-redis", "dramatiq-redis"]


@pytest.fixture(params=COMBINATIONS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path, "backlog_jobs", {"TASKBRIDGE_ENQUEUE_BATCH_SIZE": "300"}) as harness:
        yield harness


def _waiting_args(harness: Harness) -> list[Any]:
    """The first argument of every waiting call, in the order workers would take them."""
    found: list[Any] = []
    while taken := harness.engine.take(harness.queue, 500):
        settle(taken, ack=True)
        found += [decode(unwrap(item.body).envelope or "").args[0] for item in taken]
    return found


def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().broker_url)


def test_every_call_of_many_batches_is_stored_once_in_order(harness: Harness) -> None:
    total = 300 * 7 + 123  # batches written while the next is built, and a short last one
    assert jobs.noop.enqueue_many((n,) for n in range(total)) == total
    assert harness.engine.depth(harness.queue) == total
    assert _waiting_args(harness) == list(range(total))


def test_batches_are_stored_in_each_engines_own_layout_read_by_its_own_decoder(harness: Harness) -> None:
    """Read straight from Redis with the engine library's own code, not taskbridge's consumer: the
    commands of one batch (several per batch, cut by size) leave the layout Dramatiq or kombu reads."""
    total = 700
    assert jobs.noop.enqueue_many((n,) for n in range(total)) == total
    client = _redis()
    engine: Any = harness.engine
    try:
        if get_settings().engine == "dramatiq":
            from dramatiq import Message

            key = f"{get_settings().namespace}:{harness.queue}"
            ids = client.lrange(key, 0, -1)
            bodies = client.hmget(f"{key}.msgs", ids)
            assert len(ids) == len(set(ids)) == total and None not in bodies
            envelopes = [decode(Message.decode(body).args[0]) for body in bodies]
        else:
            from kombu.utils.json import loads

            key = str(engine.broker.transport_options.get("global_keyprefix", "")) + harness.queue
            stored = [loads(item) for item in reversed(client.lrange(key, 0, -1))]  # kombu pops from the right
            assert len(stored) == total
            envelopes = [decode(json.dumps(loads(base64.b64decode(m["body"]))[0][0])) for m in stored]
    finally:
        client.close()
    assert [envelope.args for envelope in envelopes] == [[n] for n in range(total)]
    settle(harness.engine.take(harness.queue, total), ack=True)


def test_refs_name_every_stored_call(harness: Harness) -> None:
    refs = jobs.noop.enqueue_many([(n,) for n in range(700)], refs=True)
    assert [ref.envelope.args for ref in refs] == [[n] for n in range(700)]
    assert len({ref.id for ref in refs}) == 700


def test_a_bad_call_after_a_batch_in_flight_reports_that_batch_as_published(harness: Harness) -> None:
    calls: list[Any] = [(n,) for n in range(450)]
    calls[400] = (object(),)  # in the second batch, built while the first is in flight
    with pytest.raises(EnqueueError, match=r"\(item 401; 300 earlier calls were published\)$"):
        jobs.noop.enqueue_many(calls)
    assert _waiting_args(harness) == list(range(300))
    jobs.noop.enqueue(1)  # the connection the batch was written on is fine for what comes next
    assert _waiting_args(harness) == [1]


def test_a_batch_redis_refuses_raises_and_nothing_after_it_is_sent(harness: Harness) -> None:
    client = _redis()
    holdings = list(harness.engine.holdings(harness.queue))  # type: ignore[attr-defined]
    key = next(name for name in holdings if name.endswith(harness.queue))
    try:
        client.set(key, "not a list")  # every push to the queue fails with WRONGTYPE
        with pytest.raises(PublishError, match=re.compile("WRONGTYPE|wrong kind", re.IGNORECASE)) as raised:
            jobs.noop.enqueue_many((n,) for n in range(1000))
        assert "300 message" in str(raised.value) or "batch of 300 messages" in str(raised.value)
        assert client.get(key) == b"not a list"
    finally:
        client.delete(key)
        client.close()
    assert jobs.noop.enqueue_many((n,) for n in range(5)) == 5
    assert _waiting_args(harness) == list(range(5))
