"""Commands written to Redis now and their replies read later (taskbridge.redis_inflight), on a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from taskbridge.redis_inflight import PIECE_BYTES, InFlight, pieces


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"tb-inflight-{uuid.uuid4().hex}"
    yield name
    client.delete(name)


def test_replies_come_in_order_once_read(client: redis.Redis, key: str) -> None:
    written = InFlight(client, [("RPUSH", key, "a", "b"), ("RPUSH", key, "c"), ("LLEN", key)])
    assert client.lrange(key, 0, -1) == [b"a", b"b", b"c"], "stored before the replies are read"
    assert written.wait() == [2, 3, 3]
    with pytest.raises(RuntimeError, match="read already"):
        written.wait()


def test_an_error_reply_is_raised_after_every_reply_was_read(client: redis.Redis, key: str) -> None:
    client.set(key, "text")
    written = InFlight(client, [("RPUSH", key, "a"), ("GET", key)])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        written.wait()
    assert client.get(key) == b"text", "the connection is in step for the next command"


def test_a_command_failing_inside_exec_is_raised(client: redis.Redis, key: str) -> None:
    client.set(key, "text")
    other = f"{key}-list"
    try:
        written = InFlight(client, [("MULTI",), ("RPUSH", other, "a"), ("RPUSH", key, "b"), ("EXEC",)])
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            written.wait()
    finally:
        client.delete(other)


def test_a_connection_lost_before_the_replies_is_replaced_and_nothing_is_lost(
    client: redis.Redis, key: str, redis_url: str
) -> None:
    killer = redis.Redis.from_url(redis_url)
    try:
        own_id = client.client_id()  # the pool hands this same connection to the write below
        written = InFlight(client, [("RPUSH", key, "a")])
        assert killer.client_kill_filter(_id=own_id) == 1
        assert written.wait() in ([1], [2])
        assert client.lrange(key, 0, -1) in ([b"a"], [b"a", b"a"]), "stored at least once"
    finally:
        killer.close()


def test_pieces_keep_each_command_small_and_lose_no_value() -> None:
    values = [f"{n:04}".encode() * 250 for n in range(300)]  # 1,000 bytes each
    runs = pieces(values, len)
    assert [value for run in runs for value in run] == values, "every value, in order"
    assert len(runs) == -(-300_000 // PIECE_BYTES)
    assert all(sum(map(len, run)) <= PIECE_BYTES + 1000 for run in runs)
    assert pieces(values[:3], len) == [values[:3]], "small enough for one command"
    assert pieces([], len) == []
