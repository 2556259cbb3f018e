"""Backoff: exponential delays with a cap, jitter within [d/2, d], which errors retry, the budget."""

from __future__ import annotations

from typing import Any

import pytest

from taskbridge import Backoff, JobDefinitionError, JobTimeout
from taskbridge.job import job, lookup
from taskbridge.policies import retry


def test_exact_delays_double_from_base_without_jitter() -> None:
    policy = Backoff(max_retries=6, base="2s", cap="1m", jitter=False)
    assert [policy.delay(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]


def test_cap_holds_for_any_retry_number() -> None:
    policy = Backoff(max_retries=100_000, base="250ms", cap="10m", jitter=False)
    assert policy.delay(12) == 512.0
    assert policy.delay(13) == 600.0
    assert policy.delay(5_000) == 600.0
    assert policy.bounds(100_000) == (600.0, 600.0)


def test_jitter_stays_within_half_and_full_delay() -> None:
    policy = Backoff(max_retries=10, base=1.0, cap=30.0, jitter=True)
    for retry_number, full in [(1, 1.0), (3, 4.0), (6, 30.0)]:
        draws = [policy.delay(retry_number) for _ in range(2_000)]
        assert all(full / 2 <= d <= full for d in draws)
        assert policy.bounds(retry_number) == (full / 2, full)
        # the draws really spread over the range rather than sitting at one end
        assert min(draws) < full * 0.55 and max(draws) > full * 0.95
        assert len(set(draws)) > 1_900


def test_durations_are_parsed() -> None:
    policy = Backoff(base="500ms", cap="2m")
    assert (policy.base, policy.cap) == (0.5, 120.0)


def invalid_backoffs() -> list[Any]:
    return [
        pytest.param({"base": "later"}, r"Backoff\.base: cannot read 'later'", id="base-text"),
        pytest.param({"cap": -1}, r"Backoff\.cap: must not be negative", id="cap-negative"),
        *(
            pytest.param({"max_retries": value}, r"Backoff\.max_retries must be a whole number >= 0", id=f"max-{value}")
            for value in (-1, 1.5, True, "3")
        ),
        *(
            pytest.param({"on": value}, r"Backoff\.on must hold exception classes", id=f"on-{index}")
            for index, value in enumerate([("OSError",), (OSError, 5), (int,)])
        ),
    ]


@pytest.mark.usefixtures("job_registry")
@pytest.mark.parametrize(("values", "message"), invalid_backoffs())
def test_an_invalid_backoff_is_refused_at_decoration_naming_the_job(values: dict[str, Any], message: str) -> None:
    with pytest.raises(JobDefinitionError, match=r"^job 'test_backoff\.invalid': option retry= .*" + message):

        @job(name="test_backoff.invalid", retry=Backoff(**values))
        def invalid() -> None: ...

    assert lookup("test_backoff.invalid") is None


@pytest.mark.parametrize(("values", "message"), invalid_backoffs())
def test_an_invalid_backoff_used_on_its_own_raises(values: dict[str, Any], message: str) -> None:
    policy = Backoff(**values)
    assert policy.problem is not None
    with pytest.raises(ValueError, match=message):
        policy.delay(1)
    with pytest.raises(ValueError, match=message):
        policy.retries(OSError())


def test_on_filters_which_errors_retry() -> None:
    policy = Backoff(on=(OSError, KeyError))
    assert policy.retries(ConnectionError())  # a subclass of OSError
    assert policy.retries(KeyError("k"))
    assert not policy.retries(ValueError())
    assert not policy.retries(JobTimeout())


def test_on_accepts_one_class_or_a_list() -> None:
    assert Backoff(on=OSError).on == (OSError,)  # type: ignore[arg-type]
    assert Backoff(on=[OSError, KeyError]).on == (OSError, KeyError)  # type: ignore[arg-type]


def test_default_retries_any_exception_including_timeouts() -> None:
    policy = Backoff()
    assert policy.retries(ValueError()) and policy.retries(JobTimeout())
    assert not policy.retries(KeyboardInterrupt())


@pytest.mark.usefixtures("job_registry")
def test_max_retries_is_the_number_of_retries_after_the_first_attempt() -> None:
    @job(name="test_backoff.budget", retry=Backoff(max_retries=2, on=(OSError,)))
    def budget() -> None: ...

    spec = budget.spec
    assert [retry.should_retry(spec, attempt, OSError()) for attempt in (1, 2, 3, 4)] == [True, True, False, False]
    assert not retry.should_retry(spec, 1, ValueError())
    # the engine killed the job (error None): retried like a JobTimeout, which on=(OSError,) excludes
    assert not retry.should_retry(spec, 1, None)


@pytest.mark.usefixtures("job_registry")
def test_a_job_without_retry_is_never_retried() -> None:
    @job(name="test_backoff.once")
    def once() -> None: ...

    assert once.spec.retry.max_retries == 0
    assert not retry.should_retry(once.spec, 1, OSError())


@pytest.mark.usefixtures("job_registry")
def test_killed_jobs_are_retried_when_the_policy_retries_timeouts() -> None:
    @job(name="test_backoff.killable", retry=Backoff(max_retries=1))
    def killable() -> None: ...

    assert retry.should_retry(killable.spec, 1, None)
    assert retry.delay(killable.spec, 1) <= 1.0
