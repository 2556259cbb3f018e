"""The Redis coordination store: locks, limits and uniqueness marks shared by every worker host."""

from __future__ import annotations

import functools
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from .. import tls
from ..config import mask_url
from ..errors import CoordinationError
from ..units import Rate
from .base import counts_of, slot_margin, slot_spacing_microseconds
from .clock import ServerClock

try:
    import redis
    from redis.exceptions import LockNotOwnedError
except ImportError as exc:
    raise ImportError(
        "the Redis coordination store needs the redis package: pip install 'taskbridge-jobs[redis]'"
    ) from exc

# GCRA with reservation: the caller always takes the next slot and learns how long until it.
# Times are integer microseconds of the server clock, so every host agrees on "now".
# KEYS[1] holds the theoretical arrival time (TAT) of the next slot and expires when it passes.
# ARGV[1] = emission interval (slot_spacing_microseconds), ARGV[2] = burst tolerance; returns the
# wait and the server's "now" it counts from.
_RESERVE_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
    tat = now
end
local next_tat = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
local wait = tat - tonumber(ARGV[2]) - now
if wait < 0 then
    wait = 0
end
return {wait, now}
"""

# KEYS[1] is a sorted set of lease token -> expiry (server milliseconds).
# ARGV[1] = token, ARGV[2] = limit, ARGV[3] = ttl in ms; returns 1 if the lease was granted.
_ACQUIRE_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

# KEYS[1]: hash of a group's counts (total, done, dead, ...; fired once it ended); KEYS[2]: hash
# member id -> ending, so a member counted twice (a redelivery) counts once.
# ARGV[1] = member id ('' when sealing), ARGV[2] = ending field or 'total', ARGV[3] = total, ARGV[4] = ttl ms.
# Returns the flattened counts to the one call that ends a sealed group (and again to a later call for
# the same member, a redelivery of the message that ended it, whose callback may not be out), else false.
_GROUP = """
if ARGV[1] == '' then
    redis.call('HSET', KEYS[1], 'total', ARGV[3])
elseif redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if not total or redis.call('HLEN', KEYS[2]) < total then
    return false
end
local fired = redis.call('HGET', KEYS[1], 'fired')
if fired and fired ~= ARGV[1] then
    return false
end
redis.call('HSET', KEYS[1], 'fired', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
# Compare and set: KEYS[1] = record, ARGV[1] = expected ('' with ARGV[2] = '0': no record), ARGV[3] = value,
# ARGV[4] = ttl ms. Returns 1 when the value was stored.
_SWAP = """
local current = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
    if current then
        return 0
    end
elseif current ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"""

F = TypeVar("F", bound=Callable[..., Any])

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
CLOCK_READS = 3
"""Most extra reads of the server's clock a slot reservation makes to place its slot."""
CLOCK_PRECISION = 0.1
"""Share of a rate's slot margin a slot's place on this host's clock is wanted within."""


def _store_call(method: F) -> F:
    """Raise :class:`CoordinationError` naming the store when Redis cannot be reached."""

    @functools.wraps(method)
    def call(self: RedisCoordination, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CoordinationError(f"coordination store {self.where} is unreachable: {exc}") from exc

    return cast(F, call)


# Every record of KEYS set to ARGV[1], expiring in ARGV[2] milliseconds.
_WRITE_RECORDS = """
for _, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
"""


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisCoordination:
    """Coordination state in Redis, shared by every worker on every host (``shared`` is True).

    Each operation is one atomic command or Lua script; expiry and rate limits follow the
    Redis server's clock, so hosts with skewed clocks agree. Keys are
    ``<namespace>:<rate|lock|slots|unique>:<key>`` and all of them expire (``slots`` holds the
    concurrency leases; the name stays so workers of every version share them).
    """

    shared = True

    def __init__(self, url: str, namespace: str = "taskbridge") -> None:
        self.namespace = namespace
        self.where = mask_url(url)
        url, options = tls.split(url)
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            **(options.redis_kwargs() if options else {}),
        )
        self._reserve_rate = self._client.register_script(_RESERVE_RATE)
        self._clock = ServerClock()
        self._acquire_lease = self._client.register_script(_ACQUIRE_LEASE)
        self._group = self._client.register_script(_GROUP)
        self._swap = self._client.register_script(_SWAP)
        self._write_records = self._client.register_script(_WRITE_RECORDS)

    @_store_call
    def reserve_rate(self, key: str, rate: Rate, burst: int = 1) -> float:
        return self._reserve(key, rate, burst)[0] / 1_000_000

    @_store_call
    def reserve_slot(self, key: str, rate: Rate) -> tuple[float, float]:
        sent = time.time()
        wait, server_now = self._reserve(key, rate, 1)
        received = time.time()
        self._clock.observe(server_now / 1_000_000, sent, received)
        slot = (server_now + wait) / 1_000_000
        earliest, latest = self._clock.local(slot, received)
        for _ in range(CLOCK_READS):
            if latest - earliest <= slot_margin(rate) * CLOCK_PRECISION:
                break
            # A slow reply and no recent quick one: read the server's clock again, so the job is not
            # held to a slot it cannot place (it would count the whole round trip as lateness).
            sent = time.time()
            seconds, microseconds = cast(tuple[int, int], self._client.time())
            received = time.time()
            self._clock.observe(seconds + microseconds / 1_000_000, sent, received)
            earliest, latest = self._clock.local(slot, received)
        return earliest, latest

    def _reserve(self, key: str, rate: Rate, burst: int) -> tuple[int, int]:
        """The wait until the slot reserved and the server's time it counts from, in microseconds."""
        interval = slot_spacing_microseconds(rate)
        wait, now = self._reserve_rate(keys=[self._key("rate", key)], args=[interval, interval * (burst - 1)])
        return int(wait), int(now)

    @_store_call
    def acquire_lock(self, key: str, ttl: float, token: str | None = None) -> str | None:
        token = token or uuid.uuid4().hex
        lock = self._client.lock(self._key("lock", key), timeout=_milliseconds(ttl) / 1000, thread_local=False)
        return token if lock.acquire(blocking=False, token=token) else None

    @_store_call
    def release_lock(self, key: str, token: str) -> bool:
        try:
            self._client.lock(self._key("lock", key), thread_local=False).do_release(token)
        except LockNotOwnedError:
            return False
        return True

    @_store_call
    def renew_lock(self, key: str, token: str, ttl: float) -> bool:
        lock = self._client.lock(self._key("lock", key), timeout=_milliseconds(ttl) / 1000, thread_local=False)
        lock.local.token = token.encode()
        try:
            return lock.reacquire()
        except LockNotOwnedError:
            return False

    @_store_call
    def lock_ttl(self, key: str) -> float | None:
        milliseconds = cast(int, self._client.pttl(self._key("lock", key)))
        if milliseconds == -2:
            return None
        if milliseconds == -1:
            return math.inf  # a key written without an expiry by someone else: held for good
        return milliseconds / 1000

    @_store_call
    def acquire_lease(self, key: str, limit: int, ttl: float, token: str | None = None) -> str | None:
        token = token or uuid.uuid4().hex
        granted = self._acquire_lease(keys=[self._key("slots", key)], args=[token, limit, _milliseconds(ttl)])
        return token if granted else None

    @_store_call
    def release_lease(self, key: str, token: str) -> None:
        self._client.zrem(self._key("slots", key), token)

    @_store_call
    def claim_unique(self, key: str, ttl: float) -> bool:
        return bool(self._client.set(self._key("unique", key), 1, nx=True, px=_milliseconds(ttl)))

    @_store_call
    def release_unique(self, key: str) -> None:
        self._client.delete(self._key("unique", key))

    @_store_call
    def group_record(self, group: str, member: str, ending: str, ttl: float) -> dict[str, int] | None:
        return self._group_call(group, member, ending, 0, ttl)

    @_store_call
    def group_seal(self, group: str, total: int, ttl: float) -> dict[str, int] | None:
        return self._group_call(group, "", "total", total, ttl)

    def _group_call(self, group: str, member: str, ending: str, total: int, ttl: float) -> dict[str, int] | None:
        keys = [self._key("group", group), self._key("group", group + ":members")]
        reply = self._group(keys=keys, args=[member, ending, total, _milliseconds(ttl)])
        if not reply:
            return None
        pairs = dict(zip(reply[::2], reply[1::2], strict=True))
        return counts_of({k.decode(): int(v) for k, v in pairs.items() if k != b"fired"})

    @_store_call
    def read_record(self, key: str) -> str | None:
        value = self._client.get(self._key("record", key))
        return None if value is None else cast(bytes, value).decode()

    @_store_call
    def swap_record(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        present = "0" if expected is None else "1"
        args: list[str | int] = [expected or "", present, value, _milliseconds(ttl)]
        return bool(self._swap(keys=[self._key("record", key)], args=args))

    @_store_call
    def write_records(self, keys: Sequence[str], value: str, ttl: float, *, newest: int | None = None) -> None:
        # One script call packs far cheaper than a pipeline of SETs (one command, not one per key).
        prefix = f"{self.namespace}:record:"
        self._write_records(keys=[prefix + key for key in keys], args=[value, _milliseconds(ttl)])

    def close(self) -> None:
        self._client.close()

    def _key(self, kind: str, key: str) -> str:
        return f"{self.namespace}:{kind}:{key}"
