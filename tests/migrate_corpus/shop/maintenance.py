"""Maintenance tasks shared by every app (no app object needed)."""

from celery import shared_task

from shop.ledger import note


@shared_task
def vacuum():
    note("vacuum")


@shared_task(queue="maintenance", default_retry_delay=30, max_retries=2, autoretry_for=(OSError,))
def rotate_logs(keep_days=7):
    """Rotate and compress logs older than ``keep_days``."""
    note("rotate_logs", keep_days=keep_days)
