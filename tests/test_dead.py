"""taskbridge dead list / show / replay / purge, on every engine x transport."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import open_harness

from taskbridge.cli import main
from taskbridge.config import get_settings
from taskbridge.engine import settle
from taskbridge.envelope import Envelope, decode
from taskbridge.runner import Runner
from taskbridge.signing import signed
from taskbridge.testing import KNOWN, Harness
from taskbridge.wire import unwrap

FAILS_ONCE = "backlog_jobs.fails_once"


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _waiting(harness: Harness) -> list[Envelope]:
    taken = harness.engine.take(harness.queue, 50)
    settle(taken, ack=True)
    return [decode(unwrap(item.body).envelope or "") for item in taken]


def _fail_a_job(harness: Harness, tmp_path: Path) -> Envelope:
    """Run a job that raises through the runner, as a worker would: it becomes a dead letter."""
    envelope = Envelope(
        job=FAILS_ONCE,
        queue=harness.queue,
        kwargs={"marker": str(tmp_path / "marker")},
        chain=[{"job": "backlog_jobs.after", "args": ["next"], "kwargs": {}}],
    )
    (sent,) = signed([envelope], get_settings())  # as an enqueue does (unchanged without a signing key)
    outcome = Runner(harness.engine).run(sent.encode(), harness.queue)
    assert outcome.kind == "dead"
    return envelope


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_dead_letters_can_be_listed_shown_replayed_and_purged(name: str, tmp_path: Path) -> None:
    import backlog_jobs  # noqa: F401  (declares the jobs the runner runs in this process)

    with open_harness(name, tmp_path, "backlog_jobs") as harness:
        failed = _fail_a_job(harness, tmp_path)
        queue = harness.queue

        listed = json.loads(_cli("dead", "list", "--queue", queue, "--json"))
        assert [(d["id"], d["job"], d["attempt"]) for d in listed] == [(failed.id, FAILS_ONCE, 1)]
        assert listed[0]["error"] == f"ValueError: first run of {tmp_path / 'marker'} fails on purpose"
        assert listed[0]["failed_at"] > failed.enqueued_at
        assert "attempt 1 of 1" in listed[0]["reason"]

        shown = _cli("dead", "show", failed.id, "--queue", queue)
        assert "Traceback (most recent call last)" in shown and "in fails_once" in shown

        # What taskbridge status shows (RabbitMQ requeues what the commands released a moment later).
        harness.wait_for(lambda: harness.engine.depth(harness.dead_queue) == 1, 5, "dead letter count is 1")
        assert "replayed 1" in _cli("dead", "replay", failed.id, "--queue", queue)
        assert harness.engine.depth(harness.dead_queue) == 0
        (replayed,) = _waiting(harness)
        assert (replayed.id, replayed.attempt, replayed.chain) == (failed.id, 1, failed.chain)

        # Run the replay as a worker would: this time it succeeds and the chain resumes.
        assert Runner(harness.engine).run(replayed.encode(), queue).kind == "done"
        (step,) = _waiting(harness)
        assert (step.job, step.args) == ("backlog_jobs.after", ["next"])

        _fail_a_job(harness, tmp_path / "again")  # no marker there yet
        assert "purged 0" in _cli("dead", "purge", "--queue", queue, "--older-than", "7d")
        assert len(json.loads(_cli("dead", "list", "--queue", queue, "--json"))) == 1
        assert "purged 1" in _cli("dead", "purge", "--queue", queue)
        assert json.loads(_cli("dead", "list", "--queue", queue, "--json")) == []


@pytest.mark.parametrize("name", ["dramatiq-redis", "dramatiq-amqp"])
def test_dramatiq_own_dead_letters_show_up(name: str, tmp_path: Path) -> None:
    from dramatiq import Message

    with open_harness(name, tmp_path, "backlog_jobs") as harness:
        envelope = Envelope(job="backlog_jobs.noop", queue=harness.queue, args=[1])
        message = Message(
            queue_name=f"{harness.queue}.XQ",
            actor_name=envelope.job,
            args=(envelope.encode(),),
            kwargs={},
            options={},
            message_id=envelope.id,
            message_timestamp=0,
        )
        broker = harness.engine.broker  # type: ignore[attr-defined]
        if name.endswith("redis"):
            key = f"{broker.namespace}:{harness.queue}.XQ"
            broker.client.zadd(key, {envelope.id: 0})
            broker.client.hset(f"{key}.msgs", envelope.id, message.encode())
        else:
            broker.declare_queue(harness.queue, ensure=True)  # q, q.DQ and q.XQ, as a Dramatiq worker does
            broker.channel.basic_publish(exchange="", routing_key=f"{harness.queue}.XQ", body=message.encode())

        harness.wait_for(lambda: harness.engine.depth(harness.dead_queue) == 1, 5, "dead letter count is 1")
        (listed,) = json.loads(_cli("dead", "list", "--queue", harness.queue, "--json"))
        assert (listed["id"], listed["job"], listed["origin"]) == (envelope.id, "backlog_jobs.noop", "engine")
        assert "replayed 1" in _cli("dead", "replay", "--all", "--queue", harness.queue)
        assert [e.id for e in _waiting(harness)] == [envelope.id]
        assert harness.engine.depth(harness.dead_queue) == 0


@pytest.mark.parametrize("name", ["memory", "celery-redis"])
def test_a_replayed_job_is_signed_again(name: str, tmp_path: Path) -> None:
    import backlog_jobs  # noqa: F401

    settings = {"TASKBRIDGE_SIGNING_KEY": "a-key-of-at-least-32-characters-long-0123"}
    with open_harness(name, tmp_path, "backlog_jobs", settings=settings) as harness:
        failed = _fail_a_job(harness, tmp_path)
        assert "replayed 1" in _cli("dead", "replay", failed.id, "--queue", harness.queue)
        taken = harness.engine.take(harness.queue, 5)
        settle(taken, ack=True)
        (item,) = taken
        # The replay changed the attempt, so it carries a new signature the worker accepts.
        assert Runner(harness.engine).run_item(item.body, harness.queue).kind == "done"
