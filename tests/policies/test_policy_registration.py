"""A policy from outside taskbridge is one file and one line: registered, its option is an @job
option, its parse validates it and its before_run decides, on the embedded engine and on a real worker."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support import Embedded, open_harness
from tag_policy import RETRY_AFTER, TAGS_ENV, RequiresTag

from taskbridge import JobDefinitionError, job, policies
from taskbridge.job import lookup
from taskbridge.outcomes import Defer, Done
from taskbridge.policies import POLICIES
from taskbridge.policies.base import Policy


@pytest.fixture
def requires_tag() -> Iterator[None]:
    """The ``requires_tag`` policy, registered for this test only."""
    with policies.registered(RequiresTag(), before="timeout"):
        yield


def test_a_registered_policy_takes_its_place_in_the_order_and_leaves_with_the_block() -> None:
    before = POLICIES.names
    with policies.registered(RequiresTag(), before="timeout"):
        assert POLICIES.names.index("requires_tag") == POLICIES.names.index("timeout") - 1
        assert "requires_tag" in POLICIES.options
    assert POLICIES.names == before and "requires_tag" not in POLICIES.options


def test_its_option_is_parsed_into_the_spec(requires_tag: None) -> None:
    @job(name="tagpolicy.parsed", requires_tag="gpu")
    def parsed() -> None: ...

    @job(name="tagpolicy.untagged")
    def untagged() -> None: ...

    assert parsed.spec.option("requires_tag") == "gpu"
    assert parsed.spec.policy_options == {"requires_tag": "gpu"}
    assert untagged.spec.option("requires_tag") is None
    assert parsed.spec.option("lock") is None and parsed.spec.option("retry") is parsed.spec.retry


def test_a_bad_value_fails_at_decoration_naming_the_job_and_option(requires_tag: None) -> None:
    with pytest.raises(JobDefinitionError, match=r"^job 'tagpolicy\.bad': option requires_tag= must be a tag name"):

        @job(name="tagpolicy.bad", requires_tag="g p u")
        def bad() -> None: ...

    assert lookup("tagpolicy.bad") is None


def test_without_the_policy_its_option_is_unknown_and_the_error_lists_the_known_ones() -> None:
    with pytest.raises(JobDefinitionError) as raised:

        @job(name="tagpolicy.unregistered", requires_tag="gpu")
        def unregistered() -> None: ...

    message = str(raised.value)
    assert message.startswith("job 'tagpolicy.unregistered': unknown option requires_tag=")
    assert "@job takes aliases, concurrency, drop_unknown_kwargs, expires, hard_timeout, lock," in message
    assert "taskbridge.policies.register" in message
    assert lookup("tagpolicy.unregistered") is None


def test_a_misspelt_built_in_option_names_the_one_meant() -> None:
    with pytest.raises(
        JobDefinitionError, match=r"^job 'tagpolicy\.typo': unknown option timout=; did you mean timeout=\?"
    ):

        @job(name="tagpolicy.typo", timout="30s")
        def typo() -> None: ...


def test_the_untagged_embedded_worker_defers_the_job_and_a_tagged_one_runs_it(
    requires_tag: None, embedded: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    @job(name="tagpolicy.render", queue="tagged", requires_tag="gpu")
    def render(n: int) -> None:
        ran.append(n)

    @job(name="tagpolicy.anywhere", queue="tagged")
    def anywhere(n: int) -> None:
        ran.append(-n)

    monkeypatch.setenv(TAGS_ENV, "ssd")
    render.enqueue(1)
    anywhere.enqueue(2)
    first, second = embedded.engine.messages("tagged")
    deferred = embedded.runner.run(first)
    assert isinstance(deferred, Defer) and deferred.reason == "needs a worker tagged 'gpu'"
    assert deferred.delay == RETRY_AFTER and deferred.envelope.attempt == 1, "a deferral is not an attempt"
    assert isinstance(embedded.runner.run(second), Done), "a job without the option is not held back"
    assert ran == [-2]
    [again] = [e for e in embedded.queued("tagged") if e.not_before is not None]
    assert (again.job, again.args, again.attempt) == ("tagpolicy.render", [1], 1), "put back, due a moment later"

    monkeypatch.setenv(TAGS_ENV, "ssd,gpu")
    assert isinstance(embedded.runner.run(again.encode()), Done)
    assert ran == [-2, 1]


@pytest.fixture
def tagged_jobs() -> Iterator[ModuleType]:
    """The jobs module workers import, imported here (registering its policy) for this test only."""
    with policies.registered():
        sys.modules.pop("tagged_jobs", None)
        yield importlib.import_module("tagged_jobs")


@pytest.mark.redis
@pytest.mark.processes
def test_on_a_celery_worker_the_job_waits_for_a_tagged_worker_and_runs_once(
    tmp_path: Path, tagged_jobs: ModuleType
) -> None:
    with open_harness("celery-redis", tmp_path, "tagged_jobs") as harness:
        harness.start_workers(env={TAGS_ENV: "ssd"})
        ref = tagged_jobs.render.enqueue(7)
        assert ref is not None
        harness.wait_for(
            lambda: len(harness.events("outcome:deferred", "render")) >= 3,
            90,
            "the untagged worker did not defer the job again and again",
        )
        assert not harness.events("ran"), "the job ran on a worker without its tag"
        assert {e["reason"] for e in harness.events("outcome:deferred", "render")} == {"needs a worker tagged 'gpu'"}
        assert harness.events("outcome:done") == []

        harness.start_workers(env={TAGS_ENV: "gpu"})
        [ran] = harness.wait_for(lambda: harness.events("ran"), 90, "no tagged worker ran the job")
        harness.wait_for(lambda: harness.events("outcome:done", "render"), 30, "the run was not reported done")
        assert (ran["n"], ran["tags"]) == (7, "gpu")
        assert len(harness.events("ran")) == 1


def test_register_refuses_a_clash() -> None:
    class Clashing(Policy):
        name = "clashing"
        options = ("lock",)

    class Reserved(Policy):
        name = "reserved"
        options = ("queue",)

    class Nameless(Policy):
        options = ("x",)

    with pytest.raises(ValueError, match=r"option 'lock' is already owned by policy 'lock'"):
        policies.register(Clashing())
    with pytest.raises(ValueError, match=r"option 'queue' is @job's own"):
        policies.register(Reserved())
    with pytest.raises(ValueError, match=r"a policy named 'lock' is already registered"):
        policies.register(next(p for p in POLICIES if p.name == "lock"))
    with pytest.raises(ValueError, match=r"no policy named 'nope' is registered"):
        policies.register(RequiresTag(), before="nope")
    with pytest.raises(ValueError, match=r"needs a name"):
        policies.register(Nameless())
    assert "requires_tag" not in POLICIES.names
