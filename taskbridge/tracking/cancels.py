"""Which jobs were cancelled, known in each worker process without a round trip per job: the
cancel script publishes each id, a background thread listens and keeps them in memory; on
(re)connecting it first reads the recent ones from a sorted set."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, cast

import redis

log = logging.getLogger("taskbridge.tracking")

RECONNECT_WAIT = 2.0
FORGET_AFTER = 86400.0
"""How long a cancelled id is remembered (and kept in the sorted set)."""


class CancelWatch:
    """``cancelled(id)`` answers from memory; None while the watch is not connected."""

    def __init__(self, client: redis.Redis, channel: str, recent_key: str) -> None:
        self._client = client
        self._channel = channel
        self._recent_key = recent_key
        self._ids: dict[str, float] = {}
        self._ready = threading.Event()
        self._pid = -1
        self._lock = threading.Lock()

    def cancelled(self, job_id: str) -> bool | None:
        if self._pid != os.getpid():
            self._start()
        if job_id in self._ids:
            return True
        return False if self._ready.is_set() else None

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._ids = {}
            self._ready = threading.Event()
            connected = threading.Event()
            threading.Thread(target=self._listen, args=(connected,), name="taskbridge-cancels", daemon=True).start()
        connected.wait(3.0)

    def _listen(self, connected: threading.Event) -> None:
        while True:
            pubsub: Any = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                now = time.time()
                recent = cast(list[str], self._client.zrangebyscore(self._recent_key, now - FORGET_AFTER, "+inf"))
                self._ids.update({_text(job_id): now + FORGET_AFTER for job_id in recent})
                self._ready.set()
                connected.set()
                next_prune = time.monotonic() + 60
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._ids[_text(message["data"])] = time.time() + FORGET_AFTER
                    if time.monotonic() > next_prune:
                        now = time.time()
                        self._ids = {k: until for k, until in self._ids.items() if until > now}
                        next_prune = time.monotonic() + 60
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._ready.clear()
                connected.set()
                log.debug("cancellation watch disconnected (%s); reconnecting", exc)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("closing the cancellation watch failed", exc_info=True)
            time.sleep(RECONNECT_WAIT)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
