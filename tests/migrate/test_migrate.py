"""The codemod on a corpus of realistic Celery and Dramatiq task modules: what it rewrites, what it
leaves and why, and that the rewritten code imports and runs on the embedded engine and on Redis."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from support import TESTS_DIR, Embedded, open_harness

from taskbridge.cli import main
from taskbridge.job import Job

CORPUS = TESTS_DIR / "migrate_corpus"
PACKAGES = ("shop", "notifications")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A fresh copy of the corpus to rewrite."""
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


def migrate(*args: str) -> Any:
    result = CliRunner().invoke(main, ["migrate", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def rewritten(corpus: Path, job_registry: Mapping[str, Job[..., Any]]) -> Iterator[Path]:
    """The corpus after ``taskbridge migrate --write``, importable; its modules and jobs (declared in
    the test's ``job_registry``) are forgotten after."""
    migrate(str(corpus), "--write")
    sys.path.insert(0, str(corpus))
    try:
        yield corpus
    finally:
        sys.path.remove(str(corpus))
        for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
            del sys.modules[name]


def test_without_write_it_prints_a_diff_and_a_summary_and_changes_nothing(corpus: Path) -> None:
    before = (corpus / "shop" / "tasks.py").read_text()
    output = migrate(str(corpus)).output
    assert (corpus / "shop" / "tasks.py").read_text() == before
    assert '-@app.task(rate_limit="10/m", expires=3600, ignore_result=True)' in output
    assert '+@job(rate_limit="10/m", expires=3600, aliases=["shop.tasks.refresh_prices"])' in output
    assert "11 task(s) rewritten in 4 file(s); 7 left untouched" in output


def test_write_maps_options_keeps_comments_and_the_old_names_as_aliases(corpus: Path) -> None:
    migrate(str(corpus), "--write")
    tasks = (corpus / "shop" / "tasks.py").read_text()
    assert "from taskbridge import Backoff, job" in tasks
    assert '@job(queue="emails", timeout=30, hard_timeout=60, aliases=["shop.send_receipt"])' in tasks
    assert "# Receipts are rendered from the stored order, never from the arguments." in tasks
    assert "# at least once: inventory deltas are idempotent" in tasks
    assert "retry=Backoff(max_retries=5, base=2, cap=300, jitter=True, on=(ConnectionError, TimeoutError))" in tasks
    assert "def audit(entry):" in tasks
    emails = (corpus / "shop" / "emails.py").read_text()
    assert "shop.celery_app" not in emails
    assert '@job(queue="emails", aliases=["shop.emails.password_reset"])' in emails
    maintenance = (corpus / "shop" / "maintenance.py").read_text()
    assert "celery" not in maintenance
    assert "retry=Backoff(max_retries=2, base=30, cap=30, jitter=False, on=(OSError,))" in maintenance
    actors = (corpus / "notifications" / "actors.py").read_text()
    assert 'timeout="20s",' in actors and 'retry=Backoff(max_retries=3, base="1s", cap="1m", jitter=True),' in actors
    assert '@job(expires="1h", aliases=["push.v2"])' in actors
    assert '@job(retry=Backoff(max_retries=20, base="15s", cap="7d", jitter=True), aliases=["send_welcome"])' in actors


def test_what_cannot_be_mapped_is_left_untouched_and_listed_with_file_line_and_reason(corpus: Path) -> None:
    output = migrate(str(corpus), "--write").output
    tasks = (corpus / "shop" / "tasks.py").read_text()
    for unchanged in ("@app.task(bind=True, max_retries=3)", "@app.task(base=LoggedTask)", "@app.task(priority=9)"):
        assert unchanged in tasks
    path = corpus / "shop" / "tasks.py"
    assert f"{path}:46: charge: bind=True body calls self.retry(...)" in output
    assert f"{path}:59: rebuild_search_index: custom Task base class (LoggedTask)" in output
    assert f"{path}:64: page_on_call: priority= has no equivalent" in output
    assert f"{path}:71: chord(...): chord has no automatic rewrite: use taskbridge.workflows.group" in output
    assert f"{path}:80: send_receipt.apply_async(priority=...): raises at run time: taskbridge has no" in output
    actors = corpus / "notifications" / "actors.py"
    assert f"{actors}:28: validate_address: throws=" in output
    assert "rate_limit was per worker in Celery; in taskbridge it is global" in output


def test_a_second_run_finds_nothing_more_to_rewrite(corpus: Path) -> None:
    migrate(str(corpus), "--write")
    output = migrate(str(corpus)).output
    assert output.startswith("0 task(s) rewritten in 0 file(s)")


def test_the_rewritten_code_imports_and_runs_on_the_embedded_engine(
    rewritten: Path, job_registry: Mapping[str, Job[..., Any]], embedded: Embedded
) -> None:
    tasks = importlib.import_module("shop.tasks")
    maintenance = importlib.import_module("shop.maintenance")
    emails = importlib.import_module("shop.emails")
    actors = importlib.import_module("notifications.actors")
    shop_ledger = importlib.import_module("shop.ledger")
    notes_ledger = importlib.import_module("notifications.ledger")
    assert job_registry["shop.tasks.send_receipt"].spec.aliases == ("shop.send_receipt",)

    tasks.nightly()  # .apply_async(countdown=10) and .delay() from the original code
    tasks.ping.delay()
    tasks.audit.delay("refund 12")
    tasks.refresh_prices.apply_async(kwargs={"region": "us"})
    maintenance.rotate_logs.delay(keep_days=3)
    emails.password_reset.apply_async(args=(9, "t0k"), queue="emails")
    actors.send_digest.send(7, period="daily")
    actors.push.send_with_options(args=("phone-1", "hi"))
    embedded.engine.start(["default", "emails", "maintenance", "mail"], 2)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(shop_ledger.CALLS) + len(notes_ledger.CALLS) < 8:
            time.sleep(0.05)
    finally:
        embedded.engine.stop()
    assert sorted(shop_ledger.CALLS) == sorted(
        [
            ("send_receipt", (1, "a@example.com"), {}),
            ("ping", (), {}),
            ("audit", ("refund 12",), {}),
            ("refresh_prices", (), {"region": "us"}),
            ("rotate_logs", (), {"keep_days": 3}),
            ("password_reset", (9, "t0k"), {}),
        ]
    )
    assert sorted(notes_ledger.CALLS) == [("push", ("phone-1", "hi"), {}), ("send_digest", (7,), {"period": "daily"})]
    [delayed] = embedded.queued("default")  # sync_inventory, countdown=10
    assert (delayed.job, delayed.args, delayed.kwargs) == ("shop.tasks.sync_inventory", ["sku-1"], {"delta": -1})


def test_a_rewritten_worker_on_redis_runs_new_enqueues_and_the_old_producers_messages(
    rewritten: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(rewritten))
    monkeypatch.setenv("LEDGER_FILE", str(ledger))
    with open_harness("celery-redis", tmp_path, "shop.tasks", {"TASKBRIDGE_CELERY_REDIS_KEY_PREFIX": ""}) as run:
        tasks = importlib.import_module("shop.tasks")
        old = Celery("shop", broker=run.combination.broker_url, set_as_current=False)
        old.conf.task_default_queue = run.queue
        run.start_workers()
        tasks.audit.delay("new producer")
        old.send_task("shop.tasks.audit", args=("old producer",))

        def calls() -> list[Any]:
            return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []

        run.wait_for(lambda: len(calls()) >= 2, 60, "the audit job did not run twice")
        time.sleep(1.0)  # a repeat would come within it
        ran = sorted(calls())
        assert ran == [["audit", ["new producer"], {}], ["audit", ["old producer"], {}]], run.worker_logs()


def rewrite_one(source: str) -> Any:
    from taskbridge.migrate import rewrite

    return rewrite(source, "myapp.tasks")


def test_an_app_named_celery_and_retry_options_without_autoretry_for() -> None:
    result = rewrite_one(
        "from celery import Celery\n\ncelery = Celery()\n\n\n@celery.task(max_retries=4)\ndef f(x):\n    return x\n"
    )
    assert '@job(aliases=["myapp.tasks.f"])' in result.code
    [change] = result.changes
    assert "max_retries removed: without autoretry_for they only applied to self.retry()" in change.notes


def test_unbounded_retries_a_task_in_a_class_and_positional_arguments_are_left_with_reasons() -> None:
    source = (
        "from celery import shared_task\n\n\n"
        "@shared_task(autoretry_for=(IOError,), max_retries=None)\ndef forever():\n    pass\n\n\n"
        "class Jobs:\n    @shared_task\n    def method(self):\n        pass\n\n\n"
        "@shared_task(some_task_base)\ndef positional():\n    pass\n"
    )
    result = rewrite_one(source)
    assert result.code == source
    reasons = {finding.what: finding.reason for finding in result.findings}
    assert "retries forever" in reasons["forever"]
    assert "inside a class" in reasons["method"]
    assert "positional" in reasons["positional"]


def test_a_module_that_does_not_import_celery_is_not_touched() -> None:
    source = "import registry\n\n\n@registry.task\ndef f():\n    pass\n"
    assert rewrite_one(source).code == source


def test_a_file_that_is_not_python_is_listed_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    output = migrate(str(tmp_path)).output
    assert f"{tmp_path / 'broken.py'}:1: file: not valid Python, skipped" in output


def test_the_celery_app_import_goes_when_no_task_uses_it_any_more() -> None:
    source = "from proj.celery import app\nfrom proj.db import save\n\n\n@app.task\ndef f(x):\n    save(x)\n"
    result = rewrite_one(source)
    assert "proj.celery" not in result.code
    assert "from proj.db import save" in result.code
