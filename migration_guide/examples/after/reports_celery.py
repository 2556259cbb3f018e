"""After: the same daily reports as taskbridge jobs (run by the migration guide's tests)."""

from __future__ import annotations

import os
from pathlib import Path

from taskbridge import Backoff, job
from taskbridge.compat import chain

REPORTS_DIR = Path(os.environ.get("REPORTS_DIR", "/tmp/reports"))


class MailServerBusy(Exception):
    """The mail server asked us to come back later."""


# bind=True and self.retry(countdown=10) became raising: MailServerBusy is retried by the Backoff.
# rate_limit is now global across all workers (it was per worker in Celery).
@job(
    queue="reports",
    timeout=30,
    hard_timeout=60,
    rate_limit="10/s",
    retry=Backoff(max_retries=5, base=10, cap=10, jitter=False, on=(MailServerBusy,)),
    aliases=["reports.send_report"],
)
def send_report(user_id: int, day: str) -> None:
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    (REPORTS_DIR / f"{user_id}-{day}.txt").write_text(f"report of user {user_id} for {day}\n")


@job(
    queue="reports",
    expires=3600,
    retry=Backoff(max_retries=3, base=1, cap=600, jitter=True, on=(OSError,)),
    aliases=["reports.archive"],
)
def archive(day: str) -> None:
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    (REPORTS_DIR / f"archived-{day}").touch()


def send_daily(day: str, user_ids: list[int]) -> None:
    """Unchanged call sites: .delay(), .si() and chain(...).apply_async() work on taskbridge jobs."""
    for user_id in user_ids:
        send_report.delay(user_id, day)
    chain(send_report.si(0, day), archive.si(day)).apply_async()
