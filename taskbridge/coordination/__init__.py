"""Coordination stores: where locks, concurrency limits, rate limits and uniqueness marks live."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..config import get_settings
from ..transports import kind_of, mask_url
from .base import Coordination
from .memory import MemoryCoordination

if TYPE_CHECKING:
    from .redis import RedisCoordination

__all__ = [
    "Coordination",
    "MemoryCoordination",
    "RedisCoordination",
    "get_coordination",
    "open_coordination",
    "set_coordination",
]


def __getattr__(name: str) -> Any:
    # RedisCoordination is imported on first use, so the core runs without the redis package.
    if name == "RedisCoordination":
        from .redis import RedisCoordination

        return RedisCoordination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_coordination(url: str, namespace: str = "taskbridge") -> Coordination:
    """Open the store at ``url``: ``memory://`` (this process only) or Redis at a
    ``redis://``, ``rediss://`` or ``unix://`` URL, its keys prefixed with ``namespace``."""
    kind = kind_of(url)
    if kind == "memory":
        return MemoryCoordination()
    if kind == "redis":
        from .redis import RedisCoordination

        return RedisCoordination(url, namespace)
    raise ValueError(
        f"cannot open the coordination store {mask_url(url)!r}: use memory:// or a redis://, rediss:// or unix:// URL"
    )


_lock = threading.Lock()
_current: Coordination | None = None


def get_coordination() -> Coordination:
    """The process-wide store, opened on first use from the settings'
    ``effective_coordination_url`` and ``namespace``."""
    global _current
    with _lock:
        if _current is None:
            settings = get_settings()
            _current = open_coordination(settings.effective_coordination_url, settings.namespace)
        return _current


def set_coordination(coordination: Coordination | None) -> None:
    """Replace the process-wide store (``None``: open it again from the settings on next use).

    The store replaced is not closed: whoever holds it may still use it.
    """
    global _current
    with _lock:
        _current = coordination
