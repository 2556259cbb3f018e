"""Before: daily reports with Celery (the code a team starts from)."""

import os
from pathlib import Path

from celery import Celery, chain

app = Celery("reports", broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.task_serializer = "json"
REPORTS_DIR = Path(os.environ.get("REPORTS_DIR", "/tmp/reports"))


class MailServerBusy(Exception):
    """The mail server asked us to come back later."""


@app.task(
    name="reports.send_report",
    bind=True,
    queue="reports",
    soft_time_limit=30,
    time_limit=60,
    rate_limit="10/s",
    max_retries=5,
)
def send_report(self, user_id, day):
    try:
        (REPORTS_DIR / f"{user_id}-{day}.txt").write_text(f"report of user {user_id} for {day}\n")
    except MailServerBusy as exc:
        raise self.retry(exc=exc, countdown=10) from exc


@app.task(name="reports.archive", autoretry_for=(OSError,), retry_backoff=True, max_retries=3, expires=3600)
def archive(day):
    (REPORTS_DIR / f"archived-{day}").touch()


def send_daily(day, user_ids):
    for user_id in user_ids:
        send_report.delay(user_id, day)
    chain(send_report.si(0, day), archive.si(day)).apply_async()
