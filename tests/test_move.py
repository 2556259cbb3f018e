"""taskbridge move: a backlog moved between engines and transports runs exactly once on the target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support import Embedded, open_harness

from taskbridge.config import Settings, load_settings
from taskbridge.dispatch import schedule
from taskbridge.engine import Engine, load_engine_factory, settle
from taskbridge.envelope import Envelope, decode
from taskbridge.move import SAME_QUEUE_NOTE, Mover
from taskbridge.testing import KNOWN, Harness
from taskbridge.wire import unwrap

NOOP = "backlog_jobs.noop"
DELAY = 8.0
RETRY_DELAY = 5.0


def _source(name: str) -> tuple[Engine, Settings]:
    """The source engine, with the harness's namespace and queue (from the environment it set)."""
    combination = KNOWN[name]
    settings = load_settings(engine=combination.engine, broker_url=combination.broker_url)
    return load_engine_factory(settings.engine)(settings), settings


def _move(source: str, target: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskbridge",
            "move",
            "--json",
            "--from-engine",
            KNOWN[source].engine,
            "--from-broker",
            KNOWN[source].broker_url,
            "--to-engine",
            KNOWN[target].engine,
            "--to-broker",
            KNOWN[target].broker_url,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


def _report(process: subprocess.Popen[bytes]) -> dict:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err.decode()
    (report,) = json.loads(out)
    return dict(report)


def _backlog(harness: Harness, engine: Engine, settings: Settings, count: int) -> dict[str, list[Envelope]]:
    """``count`` ready jobs, plus 5% due in DELAY seconds and 2.5% waiting for their second attempt."""
    queue = harness.queue
    kinds = {
        "ready": [Envelope(job=NOOP, queue=queue, args=[n]) for n in range(count)],
        "delayed": [Envelope(job=NOOP, queue=queue, args=[n]) for n in range(count // 20)],
        "retrying": [Envelope(job=NOOP, queue=queue, args=[n], attempt=2) for n in range(count // 40)],
    }
    for start in range(0, count, 500):
        schedule(engine, kinds["ready"][start : start + 500], 0, settings)
    schedule(engine, kinds["delayed"], DELAY, settings)  # as a countdown does
    schedule(engine, kinds["retrying"], RETRY_DELAY, settings)  # as the runner's Retry does
    return kinds


@pytest.mark.parametrize(
    ("source", "target", "count"),
    [
        ("celery-redis", "celery-amqp", 2000),  # outgrowing Redis: same engine, to RabbitMQ
        ("celery-redis", "dramatiq-redis", 300),  # switching engine on one transport
        ("dramatiq-redis", "celery-redis", 300),
    ],
)
def test_backlog_moves_and_runs_exactly_once_on_the_target(
    source: str, target: str, count: int, tmp_path: Path
) -> None:
    with open_harness(target, tmp_path, "backlog_jobs") as harness:
        started, kinds = _moved_backlog(harness, source, target, count)

        harness.start_workers(1, concurrency=4)
        ids = {e.id for group in kinds.values() for e in group}
        harness.wait_for(lambda: {e["id"] for e in harness.events("outcome:done")} >= ids, 120, "every job ran")
        time.sleep(1)  # a duplicate would show up about now
        done = harness.events("outcome:done")
        assert Counter(e["id"] for e in done) == Counter(ids), "each job runs exactly once"
        ran_at = {e["id"]: e for e in done}
        assert all(ran_at[e.id]["time"] >= started + DELAY for e in kinds["delayed"]), "delayed jobs wait"
        assert all(ran_at[e.id]["attempt"] == 2 for e in kinds["retrying"]), "a retry keeps its attempt"
        assert all(ran_at[e.id]["time"] >= started + RETRY_DELAY for e in kinds["retrying"])


def test_backlog_moved_to_sqs_is_stored_once_with_its_due_times(tmp_path: Path) -> None:
    # moto's SQS server answers a ReceiveMessage in about 0.4 s here, so workers would run a few jobs a
    # second: the target queue is read back instead (300 jobs, not 2,000): every job stored exactly
    # once, delayed ones still due later, retries on their attempt.
    source, target = "dramatiq-amqp", "dramatiq-sqs"
    with open_harness(target, tmp_path, "backlog_jobs") as harness:
        started, kinds = _moved_backlog(harness, source, target, 300)
        ids = {e.id for group in kinds.values() for e in group}
        stored: dict[str, list[Envelope]] = {}
        deadline = time.monotonic() + 90
        while set(stored) < ids and time.monotonic() < deadline:
            taken = harness.engine.take(harness.queue, 500)
            for item in taken:
                envelope = decode(unwrap(item.body).envelope or "")
                stored.setdefault(envelope.id, []).append(envelope)
            settle(taken, ack=True)
        assert set(stored) == ids and all(len(copies) == 1 for copies in stored.values())
        assert all(stored[e.id][0].not_before >= started + DELAY for e in kinds["delayed"])  # type: ignore[operator]
        assert all(stored[e.id][0].attempt == 2 for e in kinds["retrying"])


def _moved_backlog(harness: Harness, source: str, target: str, count: int) -> tuple[float, dict[str, list[Envelope]]]:
    """A backlog written under ``source`` and moved with ``taskbridge move`` to the harness's target."""
    engine, settings = _source(source)
    try:
        started = time.time()
        kinds = _backlog(harness, engine, settings, count)
        report = _report(_move(source, target))
        total = sum(len(v) for v in kinds.values())
        assert (report["moved"], report["malformed"], report["left"], report["possibly_twice"]) == (total, 0, 0, 0)
        assert engine.depth(harness.queue) == 0
        return started, kinds
    finally:
        engine.close()


def test_a_move_killed_half_way_loses_nothing_when_run_again(tmp_path: Path) -> None:
    source, target, count = "celery-redis", "celery-amqp", 3000
    with open_harness(target, tmp_path, "backlog_jobs") as harness:
        engine, settings = _source(source)
        try:
            ids = {e.id for e in _backlog(harness, engine, settings, count)["ready"]}
            first = _move(source, target, "--batch", "50")
            harness.wait_for(lambda: harness.engine.depth(harness.queue) >= count // 3, 60, "the move got going")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert 0 < engine.depth(harness.queue) < count, "killed half-way"

            report = _report(_move(source, target, "--batch", "50"))
            assert report["left"] == 0 and report["malformed"] == 0
        finally:
            engine.close()

        stored: Counter[str] = Counter()
        while taken := harness.engine.take(harness.queue, 500):
            stored.update(decode(unwrap(item.body).envelope or "").id for item in taken)
            settle(taken, ack=True)
        moved_ids = set(stored)
        assert moved_ids >= ids, f"{len(ids - moved_ids)} jobs lost"
        duplicates = sum(n - 1 for n in stored.values())
        assert duplicates <= report["possibly_twice"], "every duplicate is reported"
        assert report["possibly_twice"] <= 50 * 4, "only what the killed move held may be twice"


def test_a_move_into_its_own_queue_stops_instead_of_looping(embedded: Embedded) -> None:
    # Both engines share one queue on some transports (RabbitMQ, SQS): moving there rewrites each
    # job once, then the first ones come back and the move stops.
    engine, settings = embedded.engine, embedded.settings
    envelopes = [Envelope(job=NOOP, queue="shared", args=[n]) for n in range(1200)]
    schedule(engine, envelopes, 0, settings)

    (report,) = Mover(engine, engine, settings, settings, batch=500).move(["shared"])

    assert report.note == SAME_QUEUE_NOTE
    assert Counter(e.id for e in embedded.queued("shared")) == Counter(e.id for e in envelopes)


def test_malformed_items_stay_at_the_source_and_dead_letters_move_with_their_record(tmp_path: Path) -> None:
    import redis
    from click.testing import CliRunner
    from taskbridge_celery.take import redis_keys

    from taskbridge.cli import main
    from taskbridge.dispatch import publish_dead_letter

    source, target = "celery-redis", "dramatiq-redis"
    with open_harness(target, tmp_path, "backlog_jobs") as harness:
        engine, settings = _source(source)
        queue = harness.queue
        try:
            schedule(engine, [Envelope(job=NOOP, queue=queue, args=[1])], 0, settings)
            client = redis.Redis.from_url(KNOWN[source].broker_url)
            client.lpush(redis_keys(engine.broker, queue)[0], b"\xff\xfe not a message")  # type: ignore[attr-defined]
            failed = Envelope(job=NOOP, queue=queue, args=[2])
            publish_dead_letter(
                engine,
                queue=queue,
                reason="failed on attempt 3 of 3: ValueError: boom",
                envelope=failed,
                raw=None,
                settings=settings,
                traceback="Traceback (most recent call last):\nValueError: boom\n",
            )

            report = _report(_move(source, target))
            assert (report["moved"], report["malformed"]) == (1, 1)
            assert engine.depth(harness.dead_queue) == 2, "the malformed item is a dead letter at the source"

            report = _report(_move(source, target, "--dead-letters"))
            assert (report["moved"], report["malformed"], report["left"]) == (2, 0, 0)
        finally:
            engine.close()

        result = CliRunner().invoke(main, ["dead", "list", "--queue", queue, "--json"], catch_exceptions=False)
        listed = {d["id"]: d for d in json.loads(result.output)}
        assert listed[failed.id]["error"] == "ValueError: boom"
        assert listed[failed.id]["reason"] == "failed on attempt 3 of 3: ValueError: boom"
        (malformed,) = [d for d in listed.values() if d["id"] != failed.id]
        assert malformed["reason"].startswith("not movable: ")
