"""The job registry a test declares its jobs in: ``isolated_jobs()`` and the ``job_registry`` fixture."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from support import Embedded

from taskbridge import JobDefinitionError, job
from taskbridge.envelope import Envelope
from taskbridge.job import Job, lookup, registry
from taskbridge.outcomes import Dead, Done
from taskbridge.testing import isolated_jobs

pytest_plugins = ("pytester",)


@job(name="declared.at_import")
def at_import() -> None: ...


def test_jobs_declared_inside_are_forgotten_and_those_declared_before_stay() -> None:
    before = dict(registry())
    with isolated_jobs() as jobs:

        @job(name="declared.inside")
        def inside() -> None: ...

        assert lookup("declared.inside") is inside and jobs["declared.inside"] is inside
        assert lookup("declared.at_import") is at_import, "jobs declared before stay visible"
    assert lookup("declared.inside") is None
    assert registry() == before


def test_a_name_taken_in_one_block_may_be_taken_again_with_other_options_in_the_next() -> None:
    for queue in ("first", "second"):
        with isolated_jobs():
            handle = job(name="declared.again", queue=queue)(_function_named(f"again_{queue}"))
            assert lookup("declared.again") is handle and handle.spec.queue == queue


def test_a_name_is_still_declared_once_inside_a_block() -> None:
    with isolated_jobs():
        job(name="declared.once")(_function_named("first"))
        with pytest.raises(JobDefinitionError, match=r"job 'declared\.once' is declared twice"):
            job(name="declared.once")(_function_named("second"))
        with pytest.raises(JobDefinitionError, match=r"job 'declared\.at_import' is declared twice"):
            job(name="declared.at_import")(_function_named("other"))


def test_blocks_nest_and_each_forgets_its_own_jobs() -> None:
    with isolated_jobs():
        outer = job(name="declared.outer")(_function_named("outer"))
        with isolated_jobs():
            job(name="declared.inner")(_function_named("inner"))
            assert lookup("declared.outer") is outer and lookup("declared.inner") is not None
        assert lookup("declared.outer") is outer and lookup("declared.inner") is None
    assert lookup("declared.outer") is None


def test_blocks_ending_out_of_order_are_refused() -> None:
    outer, inner = isolated_jobs(), isolated_jobs()
    outer.__enter__()
    inner.__enter__()
    try:
        with pytest.raises(RuntimeError, match="reverse order"):
            outer.__exit__(None, None, None)
    finally:
        inner.__exit__(None, None, None)
        outer.__exit__(None, None, None)
    assert lookup("declared.at_import") is at_import


def test_a_worker_thread_runs_a_job_declared_inside(
    job_registry: Mapping[str, Job[..., Any]], embedded: Embedded
) -> None:
    ran: list[tuple[str, int]] = []

    @job(name="declared.in_a_thread", queue="declared")
    def in_a_thread(word: str) -> None:
        ran.append((word, threading.get_ident()))

    assert job_registry["declared.in_a_thread"] is in_a_thread
    in_a_thread.enqueue("hello")
    embedded.engine.start(["declared"], 1)
    try:
        assert embedded.engine.join(timeout=30)
    finally:
        embedded.engine.stop()
    [(word, thread)] = ran
    assert word == "hello" and thread != threading.get_ident()
    assert embedded.dead_letters("declared") == []


def test_a_name_declared_again_with_other_parameters_binds_its_calls_anew(embedded: Embedded) -> None:
    def two(a: int, b: int) -> None: ...

    def one(a: int) -> None: ...

    with isolated_jobs():
        job(name="declared.reshaped")(two)
        fits = Envelope(job="declared.reshaped", queue="declared", args=[1, 2])
        assert isinstance(embedded.runner.run(fits.encode()), Done)
    with isolated_jobs():
        job(name="declared.reshaped")(one)
        outcome = embedded.runner.run(Envelope(job="declared.reshaped", queue="declared", args=[1, 2]).encode())
    assert isinstance(outcome, Dead) and "arguments do not match" in outcome.reason


def test_threads_declaring_one_name_at_once_leave_one_job(job_registry: Mapping[str, Job[..., Any]]) -> None:
    threads, rounds = 8, 10
    refused: list[str] = []

    def declare(name: str, start: threading.Barrier, n: int) -> None:
        function = _function_named(f"racer_{n}")
        start.wait()
        try:
            job(name=name)(function)
        except JobDefinitionError as exc:
            refused.append(str(exc))

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often, as they may on a busy machine
    try:
        for turn in range(rounds):
            start = threading.Barrier(threads)
            racers = [
                threading.Thread(target=declare, args=(f"declared.raced_{turn}", start, n)) for n in range(threads)
            ]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join(30)
    finally:
        sys.setswitchinterval(switch_interval)
    assert len(refused) == rounds * (threads - 1), "exactly one declaration of a name wins"
    assert all(f"declared.raced_{turn}" in job_registry for turn in range(rounds))


def test_the_fixture_forgets_a_test_s_jobs_before_the_next_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from taskbridge import job
        from taskbridge.job import lookup


        def test_declares(job_registry):
            @job(name="probe.job", queue="one")
            def probe():
                pass

            assert job_registry["probe.job"] is probe


        def test_declares_the_name_again(job_registry):
            assert lookup("probe.job") is None

            @job(name="probe.job", queue="two")
            def other_probe():
                pass

            assert lookup("probe.job").spec.queue == "two"


        def test_after_them():
            assert lookup("probe.job") is None
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=3)


def _function_named(name: str) -> Callable[[], None]:
    """A new function for each declaration, as a test module declaring its own would have."""

    def function() -> None: ...

    function.__name__ = function.__qualname__ = name
    return function
