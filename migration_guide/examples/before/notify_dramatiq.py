"""Before: notifications with Dramatiq (the code a team starts from)."""

import os
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

dramatiq.set_broker(RedisBroker(url=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/0")))
OUTBOX = Path(os.environ.get("OUTBOX_DIR", "/tmp/outbox"))
PUSH_MUTEX = ConcurrentRateLimiter(RedisBackend(), "push-distributed-mutex", limit=1)


@dramatiq.actor(queue_name="mail", max_retries=3, min_backoff=1000, max_backoff=60_000, time_limit=20_000)
def send_email(user_id, subject):
    (OUTBOX / f"mail-{user_id}.txt").write_text(subject)


@dramatiq.actor(actor_name="push.v2", max_age=3_600_000)
def push(device, text):
    with PUSH_MUTEX.acquire():
        (OUTBOX / f"push-{device}.txt").write_text(text)


def welcome(user_id, device):
    send_email.send(user_id, "Welcome!")
    push.send_with_options(args=(device, "Hello"), delay=5_000)
