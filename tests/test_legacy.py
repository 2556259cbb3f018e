"""Legacy messages: what unmigrated Celery and Dramatiq producers send for a job's old name runs as
the job; a pickled one is dead-lettered unread, with how to switch the producer to JSON.

The messages are built by Celery's and Dramatiq's own producer code (no broker needed here); the
end-to-end tests with real producers and workers are in test_legacy_brokers.py."""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
import time
import uuid
from typing import Any

import dramatiq
import legacy_jobs
import pytest
from celery import Celery
from dramatiq.brokers.stub import StubBroker
from kombu.serialization import dumps
from support import Embedded

from taskbridge import Backoff, job
from taskbridge.legacy import from_celery
from taskbridge.outcomes import Dead, Done, Expired

QUEUE = "default"
MS = 0.001  # Dramatiq's timestamps are whole milliseconds


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def record(kind: str, **fields: Any) -> None:
        if kind == "ran":
            calls.append({"event": kind, **fields})

    monkeypatch.setattr(legacy_jobs, "record", record)
    return calls


def celery_message(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any
) -> tuple[bytes, dict[str, Any]]:
    """The body and headers a plain Celery producer sends for ``name.apply_async(...)``."""
    app = Celery("oldapp", set_as_current=False)
    message = app.amqp.as_task_v2(str(uuid.uuid4()), name, args, kwargs, **options)
    _, _, body = dumps(message.body, serializer="json")
    return body.encode() if isinstance(body, str) else body, dict(message.headers)


def kombu_redis_item(body: bytes, headers: dict[str, Any], content_type: str = "application/json") -> bytes:
    """The item kombu's Redis transport pushes onto the list: the message as JSON, headers inside."""
    return json.dumps(
        {
            "body": body.decode() if content_type == "application/json" else body.hex(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": headers,
            "properties": {"delivery_tag": "x", "body_encoding": "utf-8", "delivery_info": {}},
        }
    ).encode()


def dramatiq_message(actor_name: str, *args: Any, delay: int | None = None, **options: Any) -> bytes:
    """The bytes a plain Dramatiq producer stores for ``actor.send_with_options(args=..., ...)``."""
    broker = StubBroker()
    broker.emit_after("process_boot")

    @dramatiq.actor(actor_name=actor_name, broker=broker)
    def old(*_: Any) -> None: ...

    message = old.send_with_options(args=args, delay=delay, **options)
    return message.encode()  # type: ignore[no-any-return]


def test_a_celery_message_for_an_alias_runs_the_job_with_its_arguments(embedded: Embedded, ran: list[Any]) -> None:
    body, headers = celery_message(legacy_jobs.CELERY_NAME, (42,), {"day": "monday"})
    outcome = embedded.runner.run_item(body, QUEUE, content_type="application/json", headers=headers)
    assert isinstance(outcome, Done)
    assert ran == [{"event": "ran", "job": "send_report", "user_id": 42, "day": "monday", "extra": {}}]
    assert outcome.envelope.job == "billing.send_report"
    assert outcome.envelope.id == headers["id"]
    assert outcome.envelope.headers["legacy"] == f"celery:{legacy_jobs.CELERY_NAME}"


def test_a_celery_message_on_redis_carries_its_headers_inside_the_item(embedded: Embedded, ran: list[Any]) -> None:
    body, headers = celery_message(legacy_jobs.CELERY_NAME, (7,), {})
    assert isinstance(embedded.runner.run_item(kombu_redis_item(body, headers), QUEUE), Done)
    assert [call["user_id"] for call in ran] == [7]


def test_celery_eta_expires_and_retries_become_the_envelopes(embedded: Embedded) -> None:
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    before = time.time()
    body, headers = celery_message(legacy_jobs.CELERY_NAME, (1,), {}, eta=eta, expires=600, retries=2)
    after = time.time()
    found = from_celery(json.loads(body), headers)
    assert found is not None and isinstance(found.payload, dict)
    assert found.payload["not_before"] == pytest.approx(eta.timestamp(), abs=0.01)
    assert before + 600 - MS <= found.payload["expires_at"] <= after + 600 + MS, "counts from sending"
    assert found.payload["attempt"] == 3


def test_an_expired_celery_message_does_not_run(embedded: Embedded, ran: list[Any]) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    body, headers = celery_message(legacy_jobs.CELERY_NAME, (1,), {}, expires=past)
    assert isinstance(embedded.runner.run_item(body, QUEUE, headers=headers), Expired)
    assert ran == []


def test_a_celery_message_with_callbacks_is_dead_lettered_not_half_run(embedded: Embedded, ran: list[Any]) -> None:
    app = Celery("oldapp", set_as_current=False)
    body, headers = celery_message(legacy_jobs.CELERY_NAME, (1,), {}, callbacks=[app.signature("myapp.tasks.next")])
    outcome = embedded.runner.run_item(body, QUEUE, headers=headers)
    assert isinstance(outcome, Dead) and "callbacks" in outcome.reason
    assert ran == []
    [letter] = embedded.dead_letters(QUEUE)
    assert "callbacks" in letter.headers["reason"]


def test_a_celery_message_for_an_undeclared_name_is_dead_lettered(embedded: Embedded, ran: list[Any]) -> None:
    body, headers = celery_message("myapp.tasks.never_declared", (1,), {})
    assert isinstance(embedded.runner.run_item(body, QUEUE, headers=headers), Dead)
    assert ran == []


def test_a_pickled_celery_message_is_dead_lettered_unread_with_how_to_switch(
    embedded: Embedded, ran: list[Any]
) -> None:
    _, headers = celery_message(legacy_jobs.CELERY_NAME, (1,), {})
    body = pickle.dumps(((1,), {}, {}))
    outcome = embedded.runner.run_item(body, QUEUE, content_type="application/x-python-serialize", headers=headers)
    assert isinstance(outcome, Dead)
    [letter] = embedded.dead_letters(QUEUE)
    assert "never deserializes pickle" in letter.headers["reason"]
    assert "task_serializer='json'" in letter.headers["reason"]
    assert ran == []


def test_a_dramatiq_message_for_an_alias_runs_the_job(embedded: Embedded, ran: list[Any]) -> None:
    item = dramatiq_message(legacy_jobs.DRAMATIQ_NAME, 5, "friday")
    outcome = embedded.runner.run_item(item, QUEUE)
    assert isinstance(outcome, Done)
    assert [(c["user_id"], c["day"]) for c in ran] == [(5, "friday")]


def test_dramatiq_delay_and_max_age_become_the_envelopes(embedded: Embedded) -> None:
    before = time.time()
    item = dramatiq_message(legacy_jobs.DRAMATIQ_NAME, 5, delay=60_000, max_age=3_600_000)
    after = time.time()
    outcome = embedded.runner.run_item(item, QUEUE)
    assert outcome.kind == "deferred"
    [queued] = embedded.queued("default")
    assert queued.not_before is not None and queued.expires_at is not None
    assert before + 60 - MS <= queued.not_before <= after + 60 + MS, "counts from sending"
    assert before + 3600 - MS <= queued.expires_at <= after + 3600 + MS


def test_a_pickled_dramatiq_message_is_dead_lettered_with_how_to_switch(embedded: Embedded, ran: list[Any]) -> None:
    fields = json.loads(dramatiq_message(legacy_jobs.DRAMATIQ_NAME, 5))
    outcome = embedded.runner.run_item(pickle.dumps(fields), QUEUE)
    assert isinstance(outcome, Dead) and "pickle" in outcome.reason and "JSONEncoder" in outcome.reason
    assert ran == []


def test_a_pickled_dramatiq_sqs_message_is_dead_lettered_with_how_to_switch(embedded: Embedded, ran: list[Any]) -> None:
    fields = json.loads(dramatiq_message(legacy_jobs.DRAMATIQ_NAME, 5))
    body = base64.b64encode(pickle.dumps(fields)).decode()  # dramatiq-sqs base64-encodes every message
    outcome = embedded.runner.run_item(body, QUEUE)
    assert isinstance(outcome, Dead) and "pickle" in outcome.reason and "JSONEncoder" in outcome.reason
    assert ran == []


@pytest.mark.usefixtures("job_registry")
def test_a_job_may_list_its_own_name_and_still_run_its_envelopes(embedded: Embedded, ran: list[Any]) -> None:
    @job(name="legacy_test.same_name", aliases=["legacy_test.same_name"])
    def same_name(n: int) -> None:
        ran.append({"n": n})

    body, headers = celery_message("legacy_test.same_name", (1,), {})
    assert isinstance(embedded.runner.run_item(body, QUEUE, headers=headers), Done)
    same_name.enqueue(2)
    [queued] = embedded.engine.messages("default")
    assert isinstance(embedded.runner.run_item(queued, QUEUE), Done)
    assert ran == [{"n": 1}, {"n": 2}]


@pytest.mark.usefixtures("job_registry")
def test_a_failing_old_message_is_retried_as_an_envelope_of_the_job(embedded: Embedded) -> None:
    @job(name="legacy_test.flaky", aliases=["oldapp.flaky"], retry=Backoff(max_retries=5, base=60, jitter=False))
    def flaky(n: int) -> None:
        raise ConnectionError("try later")

    body, headers = celery_message("oldapp.flaky", (1,), {}, retries=1)
    before = time.time()
    outcome = embedded.runner.run_item(body, QUEUE, headers=headers)
    after = time.time()
    assert outcome.kind == "retried"
    [queued] = embedded.queued("default")
    assert (queued.job, queued.args, queued.attempt) == ("legacy_test.flaky", [1], 3)
    assert queued.not_before is not None and before + 120 <= queued.not_before <= after + 120
