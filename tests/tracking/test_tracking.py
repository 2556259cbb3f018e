"""Job handles on the embedded engine and on Redis: status, result, cancel, and a store that is down."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
from support import Embedded, EmbeddedFactory

from taskbridge import (
    Backoff,
    JobCancelled,
    JobFailed,
    JobNotCancellable,
    ResultTimeout,
    ResultUnavailable,
    get_job,
    job,
)
from taskbridge.outcomes import Dead, Done, Skip

Q = "tracking"
ran: list[Any] = []


@job(name="tracking.add", queue=Q, result_ttl="1m")
def add(a: int, b: int) -> int:
    ran.append((a, b))
    return a + b


@job(name="tracking.broken", queue=Q, result_ttl=60, retry=Backoff(max_retries=1, base=0.01, jitter=False))
def broken(n: int) -> None:
    raise OSError(f"broken {n}")


@job(name="tracking.not_json", queue=Q, result_ttl=60)
def not_json() -> object:
    return object()


@job(name="tracking.plain", queue=Q)
def plain() -> str:
    return "ignored"


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def run_next(tb: Embedded) -> Any:
    body = tb.engine.messages(Q, include_delayed=True)[0]
    tb.engine.purge(Q)
    return tb.runner.run(body)


@pytest.mark.usefixtures("job_registry")
def test_status_goes_queued_running_done_and_result_returns_the_value(embedded: Embedded) -> None:
    seen: list[str] = []

    @job(name="tracking.watch", queue=Q, result_ttl=60)
    def watch() -> dict[str, Any]:
        seen.append(get_job(ref.id).status())
        return {"ok": [1, 2]}

    ref = watch.enqueue()
    assert ref is not None and ref.status() == "queued" and ref.attempts == 0
    assert isinstance(run_next(embedded), Done)
    assert seen == ["running"]
    assert ref.status() == "done" and ref.attempts == 1
    assert ref.started_at is not None and ref.finished_at is not None and ref.started_at <= ref.finished_at
    assert ref.result(timeout=1) == {"ok": [1, 2]}
    assert get_job(ref.id).result() == {"ok": [1, 2]}


def test_result_waits_for_the_job_to_finish(embedded: Embedded) -> None:
    ref = add.enqueue(2, 3)
    assert ref is not None and ref.status() == "queued"
    timer = threading.Timer(0.3, lambda: run_next(embedded))
    timer.start()
    assert ref.result(timeout=30) == 5
    assert ran == [(2, 3)], "result() returned once the job had run"
    timer.join()


def test_result_times_out_while_the_job_waits(embedded: Embedded) -> None:
    ref = add.enqueue(1, 1)
    assert ref is not None
    with pytest.raises(ResultTimeout, match=r"tracking.add.*still queued"):
        ref.result(timeout=0.2)


def test_aresult_returns_the_value_in_async_code(embedded: Embedded) -> None:
    ref = add.enqueue(4, 5)
    assert ref is not None
    threading.Timer(0.2, lambda: run_next(embedded)).start()
    assert asyncio.run(ref.aresult(timeout=5)) == 9


def test_a_failing_job_shows_failed_then_dead_with_its_error(embedded: Embedded) -> None:
    ref = broken.enqueue(7)
    assert ref is not None
    run_next(embedded)
    assert ref.status() == "failed"
    assert ref.error is not None and (ref.error.type, ref.error.message) == ("OSError", "broken 7")
    assert isinstance(run_next(embedded), Dead)
    assert ref.status() == "dead" and ref.attempts == 2
    with pytest.raises(JobFailed, match="broken 7") as failed:
        ref.result(timeout=1)
    assert failed.value.error_type == "OSError"
    assert failed.value.traceback is not None and "raise OSError" in failed.value.traceback


def test_a_result_that_is_not_json_marks_the_job_dead_with_the_reason(embedded: Embedded) -> None:
    ref = not_json.enqueue()
    assert ref is not None
    outcome = run_next(embedded)
    assert isinstance(outcome, Dead) and "not JSON" in outcome.reason
    assert ref.status() == "dead"
    with pytest.raises(JobFailed, match=r"returned object, which is not JSON"):
        ref.result(timeout=1)
    assert [e.job for e in embedded.dead_letters(Q)] == ["taskbridge.dead_letter"]


def test_a_delayed_job_shows_scheduled(embedded: Embedded) -> None:
    ref = add.options(countdown=60).enqueue(1, 2)
    assert ref is not None and ref.status() == "scheduled"


def test_cancel_before_start_means_the_body_never_runs(embedded: Embedded) -> None:
    ref = add.enqueue(1, 2)
    assert ref is not None
    ref.cancel()
    ref.cancel()  # again: nothing to do
    outcome = run_next(embedded)
    assert isinstance(outcome, Skip) and outcome.reason == "cancelled"
    assert ran == []
    assert ref.status() == "cancelled"
    with pytest.raises(JobCancelled):
        ref.result(timeout=1)


@pytest.mark.usefixtures("job_registry")
def test_cancel_is_refused_while_running_and_after_the_end(embedded: Embedded) -> None:
    refused: list[str] = []

    @job(name="tracking.self_cancel", queue=Q, result_ttl=60)
    def self_cancel() -> None:
        try:
            get_job(ref.id).cancel()
        except JobNotCancellable as exc:
            refused.append(str(exc))

    ref = self_cancel.enqueue()
    assert ref is not None
    run_next(embedded)
    assert refused and "is running" in refused[0]
    with pytest.raises(JobNotCancellable, match=r"already finished \(done\)"):
        ref.cancel()


def test_untracked_jobs_report_unknown(embedded: Embedded) -> None:
    ref = plain.enqueue()
    assert ref is not None and ref.status() == "unknown"
    with pytest.raises(ResultUnavailable, match="tracking is off"):
        ref.result(timeout=1)
    with pytest.raises(JobNotCancellable, match="no record"):
        ref.cancel()


def test_track_jobs_tracks_every_job_without_keeping_results(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(track_jobs=True)
    ref = plain.enqueue()
    assert ref is not None and ref.status() == "queued"
    run_next(tb)
    assert ref.status() == "done"
    with pytest.raises(ResultUnavailable, match="keeps no result"):
        ref.result(timeout=1)


def test_enqueue_many_returns_refs_when_asked(embedded: Embedded) -> None:
    refs = add.enqueue_many([(1, 2), (3, 4)], refs=True)
    assert [r.status() for r in refs] == ["queued", "queued"]
    assert add.enqueue_many([(1, 2)]) == 1


def test_the_ref_keeps_the_envelope_fields(embedded: Embedded) -> None:
    ref = add.options(expires="10s").enqueue(1, 2)
    assert ref is not None and ref.envelope is not None
    assert (ref.id, ref.queue, ref.attempt, ref.args) == (ref.envelope.id, Q, 1, [1, 2])
    assert ref.expires_at == ref.envelope.expires_at


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def test_redis_records_survive_across_handles(make_embedded: EmbeddedFactory, redis_url: str, namespace: str) -> None:
    tb = make_embedded(coordination_url=redis_url, namespace=namespace)
    ref = add.enqueue(20, 22)
    assert ref is not None and get_job(ref.id).status() == "queued"
    threading.Timer(0.3, lambda: run_next(tb)).start()
    assert get_job(ref.id).result(timeout=10) == 42
    assert get_job(ref.id).status() == "done"


def test_store_unreachable_enqueue_works_and_status_is_unknown(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(coordination_url=f"redis://127.0.0.1:{_closed_port()}/0")
    ref = add.enqueue(1, 1)
    assert ref is not None and ref.status() == "unknown"
    assert isinstance(run_next(tb), Done) and ran == [(1, 1)], "the job runs although tracking failed"
    with pytest.raises(ResultUnavailable):
        ref.result(timeout=1)


def test_cli_job_shows_the_record_and_status_counts_states(
    make_embedded: EmbeddedFactory, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from taskbridge.cli import main

    tb = make_embedded(coordination_url=redis_url, namespace=namespace)
    done = broken.enqueue(3)
    waiting = add.enqueue(1, 2)
    assert done is not None and waiting is not None
    body = tb.engine.messages(Q)[0]
    tb.runner.run(body)
    for name, value in {"ENGINE": "memory", "COORDINATION_URL": redis_url, "NAMESPACE": namespace}.items():
        monkeypatch.setenv(f"TASKBRIDGE_{name}", value)

    shown = CliRunner().invoke(main, ["job", done.id, "--json"])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert (record["state"], record["attempts"], record["error"]["type"]) == ("failed", 1, "OSError")
    text = CliRunner().invoke(main, ["job", waiting.id])
    assert text.exit_code == 0 and "queued" in text.output
    assert CliRunner().invoke(main, ["job", "no-such-id"]).exit_code == 1

    status = CliRunner().invoke(main, ["status", "--once", "--json", "--queues", Q])
    assert status.exit_code == 0, status.output
    [row] = json.loads(status.output)["queues"]
    assert row["states"] == {"failed": 1, "queued": 1}


def test_a_cancel_reaches_a_worker_that_is_already_listening(
    make_embedded: EmbeddedFactory, redis_url: str, namespace: str
) -> None:
    tb = make_embedded(coordination_url=redis_url, namespace=namespace)
    warm_up = add.enqueue(0, 0)
    assert warm_up is not None
    run_next(tb)  # the worker side is now connected and listening for cancellations
    ref = add.enqueue(1, 2)
    assert ref is not None
    ref.cancel()
    deadline = time.monotonic() + 5
    while not tb.runner.tracker.store.cancelled(ref.id) and time.monotonic() < deadline:
        time.sleep(0.01)
    outcome = run_next(tb)
    assert isinstance(outcome, Skip) and outcome.reason == "cancelled"
    assert ran == [(0, 0)] and get_job(ref.id).status() == "cancelled"


def test_an_enqueue_record_arriving_after_the_workers_never_undoes_it(redis_url: str, namespace: str) -> None:
    from taskbridge.tracking.redis import RedisTracking

    worker, producer = RedisTracking(redis_url, namespace), RedisTracking(redis_url, namespace)
    try:
        worker.update("j1", {"state": "done", "attempts": "1"}, 60, notify=False, guard=False, wait=True)
        producer.create([("j1", {"state": "queued", "attempts": "0", "job": "tracking.add"}, 600)])
        assert producer.read("j1") == {"state": "done", "attempts": "1", "job": "tracking.add"}
    finally:
        worker.close()
        producer.close()
