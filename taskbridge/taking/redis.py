"""Redis: items taken out of a list or sorted set into a holding hash of the taker, atomically.

A Lua script moves up to a batch of items from their key into ``<namespace>:taking:<taker>:<key>``
in one step, so an item is always either where it was or held; acknowledging deletes it from the
holding, releasing moves it back. Each taker keeps a lease key alive while it works: a holding
whose lease has expired (its taker was killed) is adopted by the next taker of that key, and its
items are handed out again marked ``redelivered`` (at once when the taker was a process of this
host that is gone). redis-py has no primitive for this (kombu's
unacked hash is filled after the pop, in a second command, and restored only after the
visibility timeout), hence the scripts.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .held import Held

if TYPE_CHECKING:
    from ..engine import Taken

Side = Literal["left", "right", "zset"]

LEASE_SECONDS = 300.0
"""How long a taker's held items stay its own without a take, ack or release; then the next
taker of the same key adopts them."""

_TAKE = """
local limit, side, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local serial = tonumber(ARGV[4])
redis.call('set', KEYS[5], '1', 'px', ARGV[5])
redis.call('hset', KEYS[4], KEYS[3], ARGV[6])
local items
if side == 'zset' then
  items = redis.call('zrange', KEYS[1], 0, limit - 1)
  for i = 1, #items do redis.call('zrem', KEYS[1], items[i]) end
elseif side == 'left' then
  items = redis.call('lrange', KEYS[1], 0, limit - 1)
  redis.call('ltrim', KEYS[1], #items, -1)
else
  local newest_first = redis.call('lrange', KEYS[1], -limit, -1)
  redis.call('ltrim', KEYS[1], 0, -#newest_first - 1)
  items = {}
  for i = #newest_first, 1, -1 do items[#items + 1] = newest_first[i] end
end
local out = {}
for i = 1, #items do
  local token, body = nil, items[i]
  if KEYS[2] ~= '' then
    token = items[i]
    body = redis.call('hget', KEYS[2], token)
    if body then redis.call('hdel', KEYS[2], token) end
  else
    token = prefix .. (serial + i)
  end
  if body then
    redis.call('hset', KEYS[3], token, body)
    out[#out + 1] = token
    out[#out + 1] = body
  end
end
return out
"""

_PUT_BACK = """
local side = ARGV[1]
local now = redis.call('time')
local score = now[1] * 1000 + math.floor(now[2] / 1000)
for i = #ARGV, 2, -1 do
  local token = ARGV[i]
  local body = redis.call('hget', KEYS[3], token)
  if body then
    redis.call('hdel', KEYS[3], token)
    local member = body
    if KEYS[2] ~= '' then
      redis.call('hset', KEYS[2], token, body)
      member = token
    end
    if side == 'zset' then
      redis.call('zadd', KEYS[1], score, member)
    elseif side == 'left' then
      redis.call('lpush', KEYS[1], member)
    else
      redis.call('rpush', KEYS[1], member)
    end
  end
end
return 1
"""

_ADOPT = """
if ARGV[3] ~= 'dead' and redis.call('exists', KEYS[3]) == 1 then return false end
local all = redis.call('hgetall', KEYS[1])
for i = 1, #all, 2 do redis.call('hset', KEYS[4], all[i], all[i + 1]) end
redis.call('del', KEYS[1])
redis.call('hdel', KEYS[2], KEYS[1])
redis.call('hset', KEYS[2], KEYS[4], ARGV[2])
redis.call('set', KEYS[5], '1', 'px', ARGV[1])
return all
"""


_FORGET = """
if redis.call('hlen', KEYS[1]) == 0 then
  redis.call('hdel', KEYS[2], KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Source:
    """Where a taskbridge queue's items live in Redis.

    ``side`` is the end consumers pop from (``left`` or ``right``), or ``zset`` for a sorted set;
    with ``bodies``, the list or set holds ids whose messages are in that hash (Dramatiq's layout).
    """

    key: str
    side: Side
    bodies: str | None = None


RedisTaken = Held[Source]
"""One item held by a :class:`RedisTaker`: ``place`` its source key, ``handle`` its token in the holding."""


class RedisTaker:
    """Takes items of one Redis database into holdings of this taker (one per source key)."""

    def __init__(self, client: Any, namespace: str, *, lease: float = LEASE_SECONDS) -> None:
        self.client = client
        self.id = uuid.uuid4().hex
        self._registry = f"{namespace}:taking"
        self._lease = f"{namespace}:taking:{self.id}"
        self._lease_ms = str(int(lease * 1000))
        self._serial = 0
        self._adopted: dict[Source, deque[RedisTaken]] = {}
        self._take = client.register_script(_TAKE)
        self._put_back = client.register_script(_PUT_BACK)
        self._adopt = client.register_script(_ADOPT)
        self._forget = client.register_script(_FORGET)

    def holding(self, source: Source) -> str:
        return f"{self._lease}:{source.key}"

    def _meta(self, source: Source) -> str:
        return json.dumps(
            {
                "key": source.key,
                "side": source.side,
                "bodies": source.bodies,
                "lease": self._lease,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    def take(self, source: Source, queue: str, limit: int) -> list[RedisTaken]:
        """Up to ``limit`` items of ``source``, oldest first; items of killed takers of it come first."""
        adopted = self._adopted.get(source)
        if adopted is None:
            adopted = self._adopted[source] = deque(self._adopt_abandoned(source, queue))
        taken: list[RedisTaken] = []
        while adopted and len(taken) < limit:
            taken.append(adopted.popleft())
        if len(taken) == limit:
            return taken
        want = limit - len(taken)
        flat = self._take(
            keys=[source.key, source.bodies or "", self.holding(source), self._registry, self._lease],
            args=[want, source.side, f"{self.id}.", self._serial, self._lease_ms, self._meta(source)],
        )
        self._serial += want
        for index in range(0, len(flat), 2):
            token = flat[index].decode() if isinstance(flat[index], bytes) else str(flat[index])
            taken.append(RedisTaken(self, source, queue, token, _bytes(flat[index + 1])))
        return taken

    def ack_many(self, items: Sequence[RedisTaken]) -> None:
        """Delete the items from their holdings, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        by_holding: dict[str, list[str]] = {}
        for item in items:
            by_holding.setdefault(self.holding(item.place), []).append(str(item.handle))
        for holding, tokens in by_holding.items():
            pipe.hdel(holding, *tokens)
        pipe.pexpire(self._lease, int(self._lease_ms))
        pipe.execute()

    def release_many(self, items: Sequence[RedisTaken]) -> None:
        """Put the items back where they were taken from, at the end consumers take from first."""
        by_source: dict[Source, list[str]] = {}
        for item in items:
            by_source.setdefault(item.place, []).append(str(item.handle))
        for source, tokens in by_source.items():
            self._put_back(keys=[source.key, source.bodies or "", self.holding(source)], args=[source.side, *tokens])
        self.client.pexpire(self._lease, int(self._lease_ms))

    def close(self) -> None:
        """Forget this taker's empty holdings; one still holding items stays registered, for the next
        taker of its key to adopt once this process is gone or its lease has expired."""
        emptied = [self._forget(keys=[self.holding(source), self._registry]) for source in self._adopted]
        if all(emptied):
            self.client.delete(self._lease)

    def _adopt_abandoned(self, source: Source, queue: str) -> list[RedisTaken]:
        found: list[RedisTaken] = []
        for holding, raw_meta in self.client.hgetall(self._registry).items():
            meta = json.loads(raw_meta)
            holding_key = holding.decode() if isinstance(holding, bytes) else holding
            if meta.get("key") != source.key or meta.get("lease") == self._lease:
                continue
            flat = self._adopt(
                keys=[holding_key, self._registry, meta["lease"], self.holding(source), self._lease],
                args=[self._lease_ms, self._meta(source), "dead" if _process_gone(meta) else "unknown"],
            )
            for index in range(0, len(flat or ()), 2):
                token = flat[index].decode() if isinstance(flat[index], bytes) else str(flat[index])
                found.append(RedisTaken(self, source, queue, token, _bytes(flat[index + 1]), redelivered=True))
        return found


def _process_gone(meta: dict[str, Any]) -> bool:
    """Whether the taker was a process of this host that no longer runs (its lease need not expire)."""
    if meta.get("host") != socket.gethostname() or not isinstance(meta.get("pid"), int):
        return False
    try:
        os.kill(meta["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisTake:
    """An engine's take on Redis: ``sources`` names the keys that hold a queue (as the engine lays
    them out), this takes from them in order through one :class:`RedisTaker`."""

    def __init__(
        self, client: Any, namespace: str, sources: Callable[[str], Sequence[Source]], *, own_client: bool
    ) -> None:
        self._taker = RedisTaker(client, namespace)
        self._sources = sources
        self._own_client = own_client

    def take(self, names: Sequence[tuple[str, str]], limit: int) -> list[Taken]:
        """Up to ``limit`` items of the queues ``names`` (pairs of the engine's name and the
        taskbridge queue its items are reported under)."""
        taken: list[Taken] = []
        for name, queue in names:
            for source in self._sources(name):
                if len(taken) < limit:
                    taken.extend(self._taker.take(source, queue, limit - len(taken)))
        return taken

    def close(self) -> None:
        """Forget the empty holdings; close the client when it is this take's own."""
        self._taker.close()
        if self._own_client:
            self._taker.client.close()
