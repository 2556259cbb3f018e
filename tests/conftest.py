"""Fixtures shared by the tests: the real servers, or a skip with the reason (a failure in CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support import Embedded, EmbeddedFactory, unavailable

from taskbridge.config import load_settings, mask_url, set_settings
from taskbridge.coordination import MemoryCoordination, set_coordination
from taskbridge.engine import set_engine
from taskbridge.memory import MemoryEngine
from taskbridge.runner import Runner

REDIS_URL = os.environ.get("TASKBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis server (``TASKBRIDGE_TEST_REDIS_URL``, default local db 0)."""
    try:
        import redis
    except ImportError:
        unavailable("the redis package is not installed: pip install 'taskbridge-jobs[redis]'")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {mask_url(REDIS_URL)} is unreachable: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def namespace() -> str:
    """A fresh key prefix, so tests and runs sharing one server never see each other's keys."""
    return f"tbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASKBRIDGE_* variable of the surrounding shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("TASKBRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_embedded(clean_env: None) -> Iterator[EmbeddedFactory]:
    """Build an :class:`Embedded` with settings overrides, e.g. ``make_embedded(inline_wait_max=0)``."""

    def make(**overrides: Any) -> Embedded:
        settings = load_settings(**{"engine": "memory", "broker_url": "memory://?autostart=0", **overrides})
        set_settings(settings)
        engine = MemoryEngine(settings)
        set_engine(engine)
        coordination = MemoryCoordination()
        set_coordination(coordination)
        return Embedded(settings, engine, coordination, Runner(engine, settings, coordination))

    try:
        yield make
    finally:
        set_engine(None)
        set_coordination(None)
        set_settings(None)


@pytest.fixture
def embedded(make_embedded: EmbeddedFactory) -> Embedded:
    """The embedded engine with default settings."""
    return make_embedded()
