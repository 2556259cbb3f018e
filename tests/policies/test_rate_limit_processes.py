"""Rate limits hold when most jobs wait for their slot away from the worker (deferred, not slept)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from rate_jobs import paced
from support import open_harness


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
