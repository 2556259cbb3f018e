"""Job records in Redis: one hash per job with a TTL, and a one-item list waiters block on."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import redis

from ..config import mask_url
from ..errors import CoordinationError
from .record import Fields

# KEYS[1] the record, KEYS[2] its done list. ARGV[1] ttl in ms, ARGV[2] '1' to wake waiters,
# ARGV[3..] field, value pairs. A cancelled job keeps its record as it is.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'state') == 'cancelled' then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
    redis.call('DEL', KEYS[2])
    redis.call('RPUSH', KEYS[2], '1')
    redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
"""

# KEYS as above; ARGV[1] = the time of the cancel. Returns the state the job had, '' without a record.
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


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisTracking:
    """Keys ``<namespace>:job:<id>`` (a hash) and, for jobs that keep results,
    ``<namespace>:job-done:<id>`` (a list holding one item once the job finished); both expire."""

    def __init__(self, url: str, namespace: str = "taskbridge") -> None:
        self.namespace = namespace
        self.where = mask_url(url)
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT, decode_responses=True
        )
        self._update = self._client.register_script(_UPDATE)
        self._cancel = self._client.register_script(_CANCEL)

    @_store_call
    def create(self, records: Sequence[tuple[str, Fields, float]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for job_id, fields, ttl in records:
            key = self._record(job_id)
            pipe.hset(key, mapping=cast(Any, fields))
            pipe.pexpire(key, _ms(ttl))
        pipe.execute()

    @_store_call
    def update(self, job_id: str, fields: Fields, ttl: float, *, notify: bool) -> bool:
        pairs = [item for pair in fields.items() for item in pair]
        keys = [self._record(job_id), self._done(job_id)]
        return bool(self._update(keys=keys, args=[_ms(ttl), "1" if notify else "0", *pairs]))

    @_store_call
    def cancel(self, job_id: str, now: float) -> str | None:
        state = self._cancel(keys=[self._record(job_id), self._done(job_id)], args=[repr(now)])
        return cast(str, state) or None

    @_store_call
    def read(self, job_id: str) -> Fields | None:
        fields = cast(dict[str, str], self._client.hgetall(self._record(job_id)))
        return fields or None

    @_store_call
    def wait(self, job_id: str, timeout: float) -> bool:
        # Moving the list's one item onto itself leaves it there for every other waiter.
        block = min(max(timeout, 0.001), LONGEST_BLOCK)
        done = self._done(job_id)
        return self._client.blmove(done, done, cast(int, block), "RIGHT", "LEFT") is not None

    @_store_call
    def scan(self, limit: int) -> Iterator[Fields]:
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
