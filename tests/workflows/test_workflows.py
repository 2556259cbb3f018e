"""Chains that pass results and groups with a callback, on the embedded engine."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import TESTS_DIR, Embedded

from taskbridge import EnqueueError, job
from taskbridge.compat import chain
from taskbridge.envelope import decode
from taskbridge.workflows import cursor, dates, fan_out, group, ids, progress

seen: list[Any] = []


@job(name="wf.download", queue="wf")
def download(account: int) -> dict[str, Any]:
    return {"account": account, "rows": [1, 2, 3]}


@job(name="wf.process", queue="wf")
def process(data: dict[str, Any], kind: str = "slow") -> int:
    return sum(data["rows"]) * (10 if kind == "fast" else 1)


@job(name="wf.store", queue="wf")
def store(total: int) -> None:
    seen.append(("store", total))


@job(name="wf.ping", queue="wf")
def ping(*args: Any) -> None:
    seen.append(("ping", list(args)))


@job(name="wf.opaque", queue="wf")
def opaque() -> object:
    return object()


@job(name="wf.fails", queue="wf")
def fails(data: Any) -> None:
    raise RuntimeError("no")


@job(name="wf.resize", queue="wf")
def resize(i: int) -> int:
    if i % 10 == 0:
        raise ValueError(f"image {i} is broken")
    return i


@job(name="wf.notify", queue="wf")
def notify(counts: dict[str, int], label: str) -> None:
    seen.append(("notify", label, counts))


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


def _drain(embedded: Embedded) -> None:
    embedded.engine.start(["wf"], 4)
    assert embedded.engine.join(timeout=20)
    embedded.engine.stop()


def test_each_step_receives_the_previous_result_and_si_steps_do_not(embedded: Embedded) -> None:
    chain(download.s(7), process.s(kind="fast"), store.s(), ping.si("end")).enqueue()
    _drain(embedded)
    assert seen == [("store", 60), ("ping", ["end"])]
    assert embedded.dead_letters("wf") == []


def test_then_passes_results_too(embedded: Embedded) -> None:
    download.s(1).then(process.s()).then(store.s()).enqueue()
    _drain(embedded)
    assert seen == [("store", 6)]


def test_a_result_that_is_not_json_dead_letters_the_step_naming_job_and_type(embedded: Embedded) -> None:
    opaque.s().then(ping.s()).enqueue()
    _drain(embedded)
    assert seen == []
    [dead] = embedded.dead_letters("wf")
    assert dead.headers["job"] == "wf.opaque"
    assert "'wf.opaque' returned a object, which is not JSON" in dead.headers["reason"]


def test_a_dead_step_stops_the_chain_and_its_dead_letter_keeps_the_rest(embedded: Embedded) -> None:
    download.s(1).then(fails.s()).then(store.s()).then(ping.si()).enqueue()
    _drain(embedded)
    assert seen == []
    [dead] = embedded.dead_letters("wf")
    assert dead.headers["job"] == "wf.fails"
    failed = decode(dead.headers["body"])
    assert failed.args == [{"account": 1, "rows": [1, 2, 3]}], "the step keeps the result it received"
    assert [step["job"] for step in failed.chain] == ["wf.store", "wf.ping"]


def test_a_chain_over_the_step_limit_is_refused_at_enqueue(make_embedded: Any) -> None:
    embedded = make_embedded(chain_max_steps=3)
    long = chain(download.s(1), process.s(), store.s(), ping.si())
    with pytest.raises(EnqueueError, match=r"chain starting with job 'wf.download' has 4 steps, over the limit of 3"):
        long.enqueue()
    assert embedded.engine.depth("wf") == 0


def test_a_group_callback_runs_once_with_the_counts(embedded: Embedded) -> None:
    ref = group((resize.s(i) for i in range(1, 101)), batch_size=7).then(notify.s("batch")).enqueue()
    assert ref.total == 100
    _drain(embedded)
    assert seen == [("notify", "batch", {"total": 100, "done": 90, "dead": 10, "expired": 0, "skipped": 0})]


def test_an_empty_group_runs_its_callback_at_once(embedded: Embedded) -> None:
    group([]).then(notify.s("none")).enqueue()
    _drain(embedded)
    assert seen == [("notify", "none", {"total": 0, "done": 0, "dead": 0, "expired": 0, "skipped": 0})]


class _Died(BaseException):
    """A worker process dying at that point: nothing after it runs, no handler catches it."""


@pytest.mark.parametrize("dies", ["before the callback's publish", "after the callback's publish"])
def test_a_group_callback_runs_once_when_the_last_member_dies_before_it_is_out(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    from taskbridge.outcomes import Done
    from taskbridge.workflows import chunks, groups

    group(resize.s(i) for i in (1, 2, 3)).then(notify.s("crash")).enqueue()
    members = embedded.queued("wf")
    embedded.engine.purge("wf")
    for member in members[:2]:
        groups.member_ended(Done(member, 0.0, None), embedded.coordination)
    publish_once = chunks.publish_once

    def dying(store: Any, owner: str, publish: Any, ttl: float) -> None:
        if dies == "before the callback's publish":
            raise _Died
        publish_once(store, owner, lambda mark: (publish(mark), _raise(_Died())), ttl)

    monkeypatch.setattr(groups, "publish_once", dying)
    with pytest.raises(_Died):
        groups.member_ended(Done(members[2], 0.0, None), embedded.coordination)
    monkeypatch.setattr(groups, "publish_once", publish_once)
    groups.member_ended(Done(members[2], 0.0, None), embedded.coordination)  # its redelivery
    groups.member_ended(Done(members[0], 0.0, None), embedded.coordination)  # and another's
    assert len(embedded.queued("wf")) == (1 if dies == "before the callback's publish" else 2)
    _drain(embedded)
    assert seen == [("notify", "crash", {"total": 3, "done": 3, "dead": 0, "expired": 0, "skipped": 0})]


def test_a_group_callback_whose_publish_fails_is_retried_in_place(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskbridge import carrying
    from taskbridge.producer import Producer

    monkeypatch.setattr(carrying, "FIRST_BACKOFF", 0.01)
    send = Producer.send
    failures: list[str] = []

    def flaky(self: Producer, envelopes: Any) -> None:
        if self.spec.name == "wf.notify" and len(failures) < 2:
            failures.append(self.spec.name)
            raise ConnectionError("broker unreachable")
        send(self, envelopes)

    monkeypatch.setattr(Producer, "send", flaky)
    group(resize.s(i) for i in range(1, 6)).then(notify.s("flaky")).enqueue()
    _drain(embedded)
    assert failures == ["wf.notify", "wf.notify"]
    assert seen == [("notify", "flaky", {"total": 5, "done": 5, "dead": 0, "expired": 0, "skipped": 0})]


def _raise(error: BaseException) -> None:
    raise error


@job(name="wf.visit", queue="wf")
def visit(item: Any, tag: str = "") -> None:
    seen.append(item)


def pages(after: int | None, limit: int) -> tuple[list[int], int | None]:
    """Keyset pagination over 1..25."""
    start = (after or 0) + 1
    items = list(range(start, min(25, start + limit - 1) + 1))
    return items, (items[-1] if items and items[-1] < 25 else None)


def test_fan_out_over_ids_visits_each_id_once(embedded: Embedded) -> None:
    ref = fan_out(visit, ids(1, 2_345), chunk=100, max_depth=300, recheck="50ms")
    assert ref.total_chunks == 24
    _drain(embedded)
    assert sorted(seen) == list(range(1, 2_346))
    done = progress(ref.id)
    assert done is not None and done["finished"] and done["chunks"] == 24 and done["items"] == 2_345


@pytest.mark.parametrize("cut", ["during the publish", "before the progress write"])
def test_a_dispatcher_cut_short_resumes_and_each_item_runs_once(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    from taskbridge.workflows import fanout

    publish, publish_chunk = fanout._publish, fanout._publish_chunk
    published: list[Any] = []
    cuts: list[str] = []

    def publish_once_cut(plan: dict[str, Any], items: list[Any], mark: dict[str, Any]) -> None:
        if mark["chunk"] == 1 and cut == "during the publish" and not cuts:
            cuts.append(cut)
            published.extend(items[:60])
            publish(plan, items[:60], mark)
            raise RuntimeError("the dispatcher died while publishing chunk 1")
        published.extend(items)
        publish(plan, items, mark)

    def publish_chunk_once_cut(*args: Any) -> Any:
        marker = publish_chunk(*args)
        if args[2] == 1 and cut == "before the progress write" and not cuts:
            cuts.append(cut)
            raise RuntimeError("the dispatcher died before recording chunk 1")
        return marker

    monkeypatch.setattr(fanout, "_publish", publish_once_cut)
    monkeypatch.setattr(fanout, "_publish_chunk", publish_chunk_once_cut)
    ref = fan_out(visit, ids(1, 250), chunk=100)
    _drain(embedded)
    assert cuts == [cut]
    assert published.count(150) == (2 if cut == "during the publish" else 1), "chunk 1 went out again, or not"
    assert sorted(seen) == list(range(1, 251)), "each id runs once"
    done = progress(ref.id)
    assert done is not None and done["finished"] and done["chunks"] == 3 and done["items"] == 250


def test_fan_out_over_dates_and_a_cursor(embedded: Embedded) -> None:
    zone = ZoneInfo("Europe/Zurich")
    start = dt.datetime(2026, 3, 29, 0, 0, tzinfo=zone)
    fan_out(visit, dates(start, dt.datetime(2026, 3, 29, 5, 0, tzinfo=zone), "1h"), chunk=2, kwargs={"tag": "t"})
    fan_out(visit, dates(dt.date(2026, 2, 27), dt.date(2026, 3, 2)), chunk=3)
    fan_out(visit, cursor(pages), chunk=10)
    _drain(embedded)
    assert sorted(x for x in seen if isinstance(x, int)) == list(range(1, 26))
    assert sorted(x for x in seen if isinstance(x, str)) == sorted(
        [
            "2026-03-29T00:00:00+01:00",
            "2026-03-29T01:00:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T04:00:00+02:00",
            "2026-03-29T05:00:00+02:00",
            "2026-02-27",
            "2026-02-28",
            "2026-03-01",
            "2026-03-02",
        ]
    )


def test_fan_out_refuses_naive_datetimes_and_arguments_that_do_not_fit(embedded: Embedded) -> None:
    with pytest.raises(EnqueueError, match="must carry a time zone"):
        dates(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
    with pytest.raises(EnqueueError, match="arguments do not match"):
        fan_out(visit, ids(1, 10), kwargs={"nope": 1})


def test_fanout_status_shows_chunks_done_of_total(embedded: Embedded) -> None:
    from click.testing import CliRunner

    from taskbridge.cli import main

    ref = fan_out(visit, ids(1, 250), chunk=100)
    shown = CliRunner().invoke(main, ["fanout", "status", ref.id])
    assert shown.exit_code == 0 and "running, chunks 0 / 3, 0 jobs published" in shown.output
    _drain(embedded)
    shown = CliRunner().invoke(main, ["fanout", "status", ref.id])
    assert "finished, chunks 3 / 3, 250 jobs published" in shown.output


def test_status_lists_running_fan_outs_with_chunks_done_of_total(embedded: Embedded) -> None:
    import json

    from click.testing import CliRunner

    from taskbridge.cli import main

    ref = fan_out(visit, ids(1, 250), chunk=100)
    shown = CliRunner().invoke(main, ["status", "--once", "--json", "--queues", "wf"])
    assert shown.exit_code == 0, shown.output
    [running] = json.loads(shown.output)["fan_outs"]
    assert (running["id"], running["job"], running["chunks"], running["total"]) == (ref.id, "wf.visit", 0, 3)
    [first_run] = [body for body in embedded.engine.messages("wf") if decode(body).job == "taskbridge.fan_out"]
    embedded.runner.run(first_run, "wf")  # the dispatcher publishes chunk 0 only
    shown = CliRunner().invoke(main, ["status", "--once", "--json", "--queues", "wf"])
    [running] = json.loads(shown.output)["fan_outs"]
    assert (running["chunks"], running["items"]) == (1, 100) and running["eta"] is not None
    table = CliRunner().invoke(main, ["status", "--once", "--queues", "wf"], terminal_width=120)
    assert "running fan-outs" in table.output and ref.id in table.output and "1 / 3" in table.output
    _drain(embedded)
    shown = CliRunner().invoke(main, ["status", "--once", "--json", "--queues", "wf"])
    assert json.loads(shown.output)["fan_outs"] == [], "a finished fan-out is no longer listed"


@pytest.mark.parametrize("example", ["chains.py", "group.py", "fan_out.py"])
def test_the_example_runs(example: str, tmp_path: Any) -> None:
    import subprocess
    import sys

    script = TESTS_DIR.parent / "examples" / example
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
