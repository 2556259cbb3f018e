"""Locks and rate limits hold across real OS processes sharing one Redis server."""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
import traceback
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

from taskbridge.coordination import RedisCoordination
from taskbridge.units import Rate

pytestmark = pytest.mark.redis

SPAWN = multiprocessing.get_context("spawn")
WORKERS = 3


def _hold_lock(start: Barrier, seconds: float, url: str, namespace: str) -> list[tuple[float, float]]:
    """Take the lock again and again for ``seconds``; return when this process held it."""
    store = RedisCoordination(url, namespace)
    held = []
    start.wait()
    stop = time.time() + seconds
    while time.time() < stop:
        token = store.acquire_lock("critical", ttl=5)
        if token is None:
            time.sleep(random.uniform(0.0005, 0.002))
            continue
        entered = time.time()
        time.sleep(0.02)
        left = time.time()
        if not store.release_lock("critical", token):
            raise AssertionError("the lock was lost while held")
        held.append((entered, left))
        time.sleep(0.005)
    store.close()
    return held


def _admit_at_rate(start: Barrier, seconds: float, url: str, namespace: str, rate: Rate) -> tuple[float, list[float]]:
    """Reserve slots and wait for them for ``seconds``; return the start and every admission."""
    store = RedisCoordination(url, namespace)
    admitted = []
    start.wait()
    started = time.time()
    while True:
        wait = store.reserve_rate("shared", rate)
        if time.time() + wait >= started + seconds:
            break
        time.sleep(wait)
        admitted.append(time.time())
    store.close()
    return started, admitted


def _report(target: Callable[..., Any], results: Queue[tuple[bool, Any]], *args: Any) -> None:
    try:
        results.put((True, target(*args)))
    except BaseException:
        results.put((False, traceback.format_exc()))


def run_in_processes(target: Callable[..., Any], *args: Any, seconds: float) -> list[Any]:
    """Run ``target(start_barrier, seconds, *args)`` in WORKERS spawned processes; their results."""
    results: Queue[tuple[bool, Any]] = SPAWN.Queue()
    start = SPAWN.Barrier(WORKERS)
    processes = [SPAWN.Process(target=_report, args=(target, results, start, seconds, *args)) for _ in range(WORKERS)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=seconds + 30) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    failures = [detail for ok, detail in outcomes if not ok]
    assert not failures, "\n".join(failures)
    return [detail for _, detail in outcomes]


def test_lock_is_never_held_by_two_processes_at_once(redis_url: str, namespace: str) -> None:
    per_process = run_in_processes(_hold_lock, redis_url, namespace, seconds=3.0)
    assert all(len(held) >= 5 for held in per_process), [len(held) for held in per_process]
    intervals = sorted(interval for held in per_process for interval in held)
    for (_, left), (entered, _) in itertools.pairwise(intervals):
        assert entered >= left


def test_rate_limit_is_shared_by_processes(redis_url: str, namespace: str) -> None:
    rate = Rate(count=20, period=1.0)
    per_process = run_in_processes(_admit_at_rate, redis_url, namespace, rate, seconds=10.0)
    window_start = min(started for started, _ in per_process)
    admitted = [t for _, times in per_process for t in times if t < window_start + 10.0]
    assert len(admitted) == pytest.approx(200, abs=6)
    assert all(len(times) > 0 for _, times in per_process)
