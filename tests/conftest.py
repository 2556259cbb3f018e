"""Fixtures shared by the tests: the real servers, or a skip with the reason (a failure in CI)."""

from __future__ import annotations

import os
import uuid
from typing import NoReturn

import pytest

from taskbridge.config import mask_url

REDIS_URL = os.environ.get("TASKBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(reason: str) -> NoReturn:
    """Skip the test because a server is missing; in CI (``CI=true``) fail it instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis server (``TASKBRIDGE_TEST_REDIS_URL``, default local db 0)."""
    try:
        import redis
    except ImportError:
        unavailable("the redis package is not installed: pip install 'taskbridge[redis]'")
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
