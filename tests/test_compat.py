"""Celery and Dramatiq call sites on taskbridge jobs, on the embedded engine."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from support import Embedded

from taskbridge import job
from taskbridge.compat import UnsupportedOption, chain, send_task
from taskbridge.errors import EnqueueError, JobDefinitionError


@job(name="compat.add", queue="compat")
def add(x: int, y: int = 0) -> int:
    return x + y


@job(name="compat.log", queue="compat")
def log_it(text: str) -> None:
    pass


def test_delay_and_send_enqueue_like_enqueue(embedded: Embedded) -> None:
    add.delay(1, y=2)
    add.send(3)
    assert [(e.args, e.kwargs) for e in embedded.queued("compat")] == [([1], {"y": 2}), ([3], {})]


def test_apply_async_takes_args_kwargs_queue_and_countdown(embedded: Embedded) -> None:
    before = time.time()
    envelope = add.apply_async(args=(1,), kwargs={"y": 5}, countdown=30, queue="other")
    after = time.time()
    [queued] = embedded.queued("other")
    assert (queued.args, queued.kwargs, queued.id) == ([1], {"y": 5}, envelope.id)
    assert queued.not_before is not None and before + 30 <= queued.not_before <= after + 30


def test_apply_async_eta_and_expires_count_from_sending_as_in_celery(embedded: Embedded) -> None:
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)
    before = time.time()
    add.apply_async(args=(1,), eta=eta, expires=300)
    after = time.time()
    [queued] = embedded.queued("compat")
    assert queued.not_before == pytest.approx(eta.timestamp(), abs=0.001)
    assert queued.expires_at is not None and before + 300 <= queued.expires_at <= after + 300


def test_apply_async_expires_before_the_eta_is_refused(embedded: Embedded) -> None:
    with pytest.raises(EnqueueError, match="passes before the job is due"):
        add.apply_async(args=(1,), countdown=60, expires=30)


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("priority", "own queue"),
        ("link", "then"),
        ("link_error", "dead"),
        ("routing_key", "queue="),
        ("retry", "PublishError"),
        ("task_id", "envelope's id"),
        ("some_new_option", "migration_guide"),
    ],
)
def test_apply_async_refuses_options_without_equivalent_naming_the_alternative(
    embedded: Embedded, option: str, hint: str
) -> None:
    with pytest.raises(UnsupportedOption, match=f"apply_async\\({option}=...\\).*{hint}"):
        add.apply_async(args=(1,), **{option: 1})
    assert embedded.queued("compat") == []


def test_send_with_options_delay_and_max_age_are_milliseconds(embedded: Embedded) -> None:
    before = time.time()
    add.send_with_options(args=(2,), kwargs={"y": 3}, delay=5000, max_age=65_000)
    after = time.time()
    [queued] = embedded.queued("compat")
    assert (queued.args, queued.kwargs) == ([2], {"y": 3})
    assert queued.not_before is not None and before + 5 <= queued.not_before <= after + 5
    assert queued.expires_at is not None and before + 65 <= queued.expires_at <= after + 65


def test_send_with_options_refuses_dramatiq_retry_options(embedded: Embedded) -> None:
    with pytest.raises(UnsupportedOption, match=r"max_retries.*Backoff"):
        add.send_with_options(args=(2,), max_retries=3)


def test_s_si_and_pipe_chain_run_each_job_after_the_previous(embedded: Embedded) -> None:
    embedded.engine.start(["compat"], 1)
    try:
        (add.si(1, 2) | add.s(10)).delay()
        chain(add.s(3), log_it.si("x")).apply_async()
        deadline = time.time() + 5
        while time.time() < deadline and embedded.engine.depth("compat"):
            time.sleep(0.05)
    finally:
        embedded.engine.stop()
    assert embedded.dead_letters("compat") == []


def test_signature_apply_async_refuses_options(embedded: Embedded) -> None:
    with pytest.raises(UnsupportedOption, match="countdown"):
        add.s(1).apply_async(countdown=3)


@pytest.mark.usefixtures("job_registry")
def test_aliases_must_be_names_not_taken_by_another_job() -> None:
    with pytest.raises(JobDefinitionError, match="list of names"):
        job(name="compat.bad", aliases="compat.old")(lambda: None)
    with pytest.raises(JobDefinitionError, match="already the name"):
        job(name="compat.bad2", aliases=["compat.add"])(lambda: None)


@job(name="compat.renamed", queue="compat", aliases=["oldapp.tasks.renamed"])
def renamed(n: int) -> None:
    pass


def test_send_task_finds_a_job_by_name_or_alias(embedded: Embedded) -> None:
    send_task("compat.add", args=(1,), kwargs={"y": 2})
    send_task("oldapp.tasks.renamed", args=(3,), countdown=5)
    assert [(e.job, e.args) for e in embedded.queued("compat")] == [("compat.add", [1]), ("compat.renamed", [3])]
    with pytest.raises(EnqueueError, match="no job is named 'nope'"):
        send_task("nope")
