"""Job records in Redis: one hash per job with a TTL, and a one-item list waiters block on."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import redis

from ..config import mask_url
from ..errors import CoordinationError
from .cancels import CancelWatch
from .record import Fields
from .writer import GroupWriter, Write

# For job i: KEYS[2i-1] its record, KEYS[2i] its done list; ARGV[3i-2] the TTL in ms, ARGV[3i-1]
# three flags ('1' wakes waiters; '1' leaves a cancelled record as it is; '1' sets only the fields
# the record lacks: the enqueue's write, which may arrive after a worker's), ARGV[3i] the fields
# as a JSON object of strings.
_UPDATE = """
for i = 1, #KEYS / 2 do
    local record, done = KEYS[2 * i - 1], KEYS[2 * i]
    local ttl, flags = ARGV[3 * i - 2], ARGV[3 * i - 1]
    local fields = cjson.decode(ARGV[3 * i])
    if string.sub(flags, 3, 3) == '1' then
        local existed = redis.call('EXISTS', record) == 1
        for name, value in pairs(fields) do
            redis.call('HSETNX', record, name, value)
        end
        if not existed then
            redis.call('PEXPIRE', record, ttl)
        end
    elseif string.sub(flags, 2, 2) ~= '1' or redis.call('HGET', record, 'state') ~= 'cancelled' then
        local pairs_ = {}
        for name, value in pairs(fields) do
            pairs_[#pairs_ + 1] = name
            pairs_[#pairs_ + 1] = value
        end
        redis.call('HSET', record, unpack(pairs_))
        redis.call('PEXPIRE', record, ttl)
        if string.sub(flags, 1, 1) == '1' then
            redis.call('DEL', done)
            redis.call('RPUSH', done, '1')
            redis.call('PEXPIRE', done, ttl)
        end
    end
end
return 1
"""

# KEYS: the record, its done list, the sorted set of recent cancellations. ARGV[1] = the time of
# the cancel, ARGV[2] = the channel workers listen on. Returns the state the job had ('' without
# a record); a job that waits becomes cancelled, and every worker hears of it.
_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
    return ''
end
if state == 'queued' or state == 'scheduled' or state == 'failed' then
    local keep = math.floor((tonumber(redis.call('HGET', KEYS[1], 'keep')) or 3600) * 1000)
    redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
    redis.call('PEXPIRE', KEYS[1], keep)
    if redis.call('HGET', KEYS[1], 'keeps_result') == '1' then
        redis.call('DEL', KEYS[2])
        redis.call('RPUSH', KEYS[2], '1')
        redis.call('PEXPIRE', KEYS[2], keep)
    end
    local now = tonumber(ARGV[1])
    redis.call('ZADD', KEYS[3], now, ARGV[3])
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 86400)
    redis.call('PEXPIRE', KEYS[3], 86400000)
    redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return state
"""

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
LONGEST_BLOCK = 4.0
"""Longest single blocking wait: below the command timeout, so a wait is never taken for an outage."""

F = TypeVar("F", bound=Callable[..., Any])


def _store_call(method: F) -> F:
    @functools.wraps(method)
    def call(self: RedisTracking, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CoordinationError(f"coordination store {self.where} is unreachable: {exc}") from exc

    return cast(F, call)


_JSON = json.JSONEncoder(separators=(",", ":"))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisTracking:
    """Keys ``<namespace>:job:<id>`` (a hash) and, for jobs that keep results,
    ``<namespace>:job-done:<id>`` (a list holding one item once the job finished); both expire.
    ``<namespace>:cancelled`` holds the last day's cancelled ids, also published on the channel of
    that name. Workers write through a :class:`GroupWriter` and ask a :class:`CancelWatch`."""

    def __init__(self, url: str, namespace: str = "taskbridge") -> None:
        self.namespace = namespace
        self.where = mask_url(url)
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT, decode_responses=True
        )
        self._update = self._client.register_script(_UPDATE)
        self._cancel = self._client.register_script(_CANCEL)
        self._channel = f"{namespace}:cancelled"
        self._writer = GroupWriter(self._send)
        self._watch = CancelWatch(self._client, self._channel, f"{namespace}:cancelled")

    def create(self, records: Sequence[tuple[str, Fields, float]]) -> None:
        for job_id, fields, ttl in records:
            self._writer.put(Write(job_id, fields, ttl, notify=False, guard=False, only_new=True))

    def update(self, job_id: str, fields: Fields, ttl: float, *, notify: bool, guard: bool, wait: bool) -> None:
        self._writer.put(Write(job_id, fields, ttl, notify, guard, only_new=False))
        if wait:
            self._writer.flush()

    def flush(self, timeout: float = 5.0) -> bool:
        return self._writer.flush(timeout)

    def cancelled(self, job_id: str) -> bool | None:
        return self._watch.cancelled(job_id)

    @_store_call
    def cancel(self, job_id: str, now: float) -> str | None:
        self._writer.flush()
        keys = [self._record(job_id), self._done(job_id), f"{self.namespace}:cancelled"]
        state = self._cancel(keys=keys, args=[repr(now), self._channel, job_id])
        return cast(str, state) or None

    @_store_call
    def _send(self, writes: list[Write]) -> None:
        keys: list[str] = []
        args: list[Any] = []
        for w in writes:
            keys += (self._record(w.job_id), self._done(w.job_id))
            flags = f"{w.notify:d}{w.guard:d}{w.only_new:d}"
            args += (_ms(w.ttl), flags, _JSON.encode(w.fields))
        self._update(keys=keys, args=args)

    @_store_call
    def read(self, job_id: str) -> Fields | None:
        self._writer.flush()
        fields = cast(dict[str, str], self._client.hgetall(self._record(job_id)))
        return fields or None

    @_store_call
    def wait(self, job_id: str, timeout: float) -> bool:
        self._writer.flush()
        # Moving the list's one item onto itself leaves it there for every other waiter.
        block = min(max(timeout, 0.001), LONGEST_BLOCK)
        done = self._done(job_id)
        return self._client.blmove(done, done, cast(int, block), "RIGHT", "LEFT") is not None

    @_store_call
    def scan(self, limit: int) -> Iterator[Fields]:
        self._writer.flush()
        keys = []
        for key in self._client.scan_iter(match=f"{self.namespace}:job:*", count=1000):
            keys.append(key)
            if len(keys) >= limit:
                break
        names = ["queue", "state", "not_before", "expires_at"]
        for start in range(0, len(keys), 500):
            pipe = self._client.pipeline(transaction=False)
            for key in keys[start : start + 500]:
                pipe.hmget(key, names)
            for values in pipe.execute():
                fields = {name: value for name, value in zip(names, values, strict=True) if value is not None}
                if fields:
                    yield fields

    def close(self) -> None:
        self._client.close()

    def _record(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    def _done(self, job_id: str) -> str:
        return f"{self.namespace}:job-done:{job_id}"
