"""Email and push notifications."""

import dramatiq
from dramatiq import actor
from dramatiq.brokers.stub import StubBroker

from notifications.ledger import note

dramatiq.set_broker(StubBroker())


@dramatiq.actor
def send_welcome(user_id):
    note("send_welcome", user_id)


@dramatiq.actor(queue_name="mail", max_retries=3, min_backoff=1000, max_backoff=60000, time_limit=20000)
def send_digest(user_id, period="weekly"):
    # One digest per user and period.
    note("send_digest", user_id, period=period)


@actor(actor_name="push.v2", max_age=3_600_000, max_retries=0)
def push(device, text):
    note("push", device, text)


@dramatiq.actor(throws=(ValueError,))
def validate_address(address):
    note("validate_address", address)


@actor(priority=10)
def page_support(ticket):
    note("page_support", ticket)
