"""Rate limits hold when most jobs wait for their slot away from the worker (deferred, not slept)."""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from pathlib import Path

import pytest
from rate_jobs import paced, per_tenant
from support import open_harness


def most_starts_in_one_period(starts: list[float], period: float) -> int:
    """The most starts in any closed window ``[t, t + period]``: the busiest one starts at a start."""
    starts = sorted(starts)
    return max(bisect.bisect_right(starts, start + period) - index for index, start in enumerate(starts))


@pytest.mark.parametrize("combination", ["dramatiq-redis", "celery-redis", "dramatiq-amqp"])
def test_deferred_jobs_keep_their_slots_apart(combination: str, tmp_path: Path) -> None:
    # 5/s with 8 threads: most jobs reserve a slot more than the inline wait (0.5 s) ahead and are
    # deferred to it. A transport that hands a deferred job back late must not make it run beside
    # the job holding the next slot.
    with open_harness(combination, tmp_path, "rate_jobs") as harness:
        paced.enqueue_many((n,) for n in range(30))
        harness.start_workers(count=2, concurrency=4)
        harness.wait_for(lambda: len(harness.events("ran", "paced")) >= 30 or None, 120, "not all ran")
        ran = harness.events("ran", "paced")
        assert sorted(e["n"] for e in ran) == list(range(30))
        assert harness.events("outcome:deferred"), "the case needs jobs deferred for their slot"
        starts = sorted(e["time"] for e in ran)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.05, f"two runs {min(gaps):.3f}s apart; the limit spaces them 0.2s apart"


@pytest.mark.parametrize("combination", ["dramatiq-redis", "celery-redis"])
def test_no_window_of_one_period_holds_more_starts_than_the_limit(combination: str, tmp_path: Path) -> None:
    # 5/s for about 3 s over 3 worker processes, the limiter never idle: the first start of a
    # period may be late for its slot while the sixth is on time; slots leave room for that.
    with open_harness(combination, tmp_path, "rate_jobs") as harness:
        paced.enqueue_many((n,) for n in range(18))
        harness.start_workers(count=3, concurrency=4)
        harness.wait_for(lambda: len(harness.events("ran", "paced")) >= 18 or None, 120, "not all ran")
        ran = harness.events("ran", "paced")
        assert sorted(e["n"] for e in ran) == list(range(18))
        assert len({e["pid"] for e in ran}) >= 2, "the case needs starts from several processes"
        starts = sorted(e["time"] for e in ran)
        gaps = [round(b - a, 4) for a, b in itertools.pairwise(starts)]
        busiest = most_starts_in_one_period(starts, 1.0)
        assert busiest <= 5, f"{busiest} starts within one second; gaps between starts: {gaps}"
        assert busiest >= 4, "the case needs the limiter kept busy"


@pytest.mark.parametrize("combination", ["dramatiq-redis"])
def test_no_window_of_one_period_holds_more_starts_of_one_key_than_the_limit(combination: str, tmp_path: Path) -> None:
    # 3/s per tenant, three tenants at once: each keeps its own limit, and together they run
    # three times as many (each key's limiter is its own).
    tenants = ("a", "b", "c")
    with open_harness(combination, tmp_path, "rate_jobs") as harness:
        per_tenant.enqueue_many({"tenant": tenant, "n": n} for n in range(9) for tenant in tenants)
        harness.start_workers(count=3, concurrency=4)
        harness.wait_for(lambda: len(harness.events("ran", "per_tenant")) >= 27 or None, 120, "not all ran")
        starts: dict[str, list[float]] = defaultdict(list)
        for event in harness.events("ran", "per_tenant"):
            starts[event["tenant"]].append(event["time"])
        assert sorted(starts) == list(tenants)
        assert {tenant: len(times) for tenant, times in starts.items()} == dict.fromkeys(tenants, 9)
        busiest = {tenant: most_starts_in_one_period(times, 1.0) for tenant, times in starts.items()}
        assert all(count <= 3 for count in busiest.values()), f"starts within one second, by tenant: {busiest}"
        everyone = [time for times in starts.values() for time in times]
        assert most_starts_in_one_period(everyone, 1.0) > 3, "the tenants' limits are their own"
