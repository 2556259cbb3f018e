"""Order processing: receipts, inventory, prices and payments."""

import logging

from celery import Task, chord

from shop.celery_app import app
from shop.ledger import note

logger = logging.getLogger(__name__)


@app.task
def ping():
    note("ping")
    return "pong"


@app.task(name="shop.send_receipt", queue="emails", soft_time_limit=30, time_limit=60)
def send_receipt(order_id, email):
    # Receipts are rendered from the stored order, never from the arguments.
    note("send_receipt", order_id, email)


@app.task(
    autoretry_for=(ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=5,
    acks_late=True,  # at least once: inventory deltas are idempotent
)
def sync_inventory(sku, delta=0):
    note("sync_inventory", sku, delta=delta)


@app.task(rate_limit="10/m", expires=3600, ignore_result=True)
def refresh_prices(region="eu"):
    note("refresh_prices", region=region)


@app.task(bind=True)
def audit(self, entry):
    note("audit", entry)


@app.task(bind=True, max_retries=3)
def charge(self, order_id):
    try:
        note("charge", order_id)
    except OSError as exc:
        raise self.retry(exc=exc, countdown=60) from exc


class LoggedTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        logger.error("task %s failed: %s", task_id, exc)


@app.task(base=LoggedTask)
def rebuild_search_index():
    note("rebuild_search_index")


@app.task(priority=9)
def page_on_call():
    note("page_on_call")


def receipts_then_prices(order_ids):
    """Send every receipt, then refresh prices once."""
    return chord(send_receipt.s(i, "shop@example.com") for i in order_ids)(refresh_prices.si())


def nightly():
    sync_inventory.apply_async(args=("sku-1",), kwargs={"delta": -1}, countdown=10)
    send_receipt.delay(1, "a@example.com")


def urgent_receipt(order_id):
    send_receipt.apply_async(args=(order_id, "vip@example.com"), priority=9)
