"""Signs of progress when many jobs are published: the callback of ``enqueue_many`` and the bar of
``taskbridge enqueue --many``."""

from __future__ import annotations

from pathlib import Path

from cli_run import one_job, taskbridge, write_jobs
from support import Embedded

from taskbridge import job


@job(queue="progress")
def noted(n: int) -> None:
    """A job to publish many of."""


def test_enqueue_many_reports_progress_after_each_batch(embedded: Embedded) -> None:
    seen: list[int] = []
    count = noted.enqueue_many(({"n": i} for i in range(1200)), batch_size=500, progress=seen.append)
    assert count == 1200
    assert seen == [500, 1000, 1200]
    assert len(embedded.queued("progress")) == 1200


def test_enqueue_many_from_the_command_line_shows_a_progress_bar(tmp_path: Path) -> None:
    module = write_jobs(tmp_path, "quiet", one_job("bulk"))
    lines = tmp_path / "runs.jsonl"
    lines.write_text("[]\n" * 1200, encoding="utf-8")
    result = taskbridge(
        "enqueue",
        f"{module}.f",
        "--many",
        str(lines),
        cwd=tmp_path,
        env={"TTY_COMPATIBLE": "1", "TASKBRIDGE_ENQUEUE_BATCH_SIZE": "500"},
    )
    assert result.code == 0, result.stderr
    assert "1200 enqueued" in result.stdout.splitlines()
    assert "enqueue quiet.f" in result.stderr and "1200/1200" in result.stderr


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    module = write_jobs(tmp_path)
    lines = tmp_path / "runs.jsonl"
    lines.write_text('{"user_id": 1}\n{oops\n', encoding="utf-8")
    result = taskbridge("enqueue", f"{module}.send_report", "--many", str(lines), cwd=tmp_path)
    assert result.code == 2
    assert "Invalid value for --many: line 2 is not JSON" in result.stderr
