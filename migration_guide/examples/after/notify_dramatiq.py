"""After: the same notifications as taskbridge jobs (run by the migration guide's tests)."""

from __future__ import annotations

import os
from pathlib import Path

from taskbridge import Backoff, job

OUTBOX = Path(os.environ.get("OUTBOX_DIR", "/tmp/outbox"))


@job(
    queue="mail",
    timeout="20s",
    retry=Backoff(max_retries=3, base="1s", cap="1m", jitter=True),
    aliases=["send_email"],
)
def send_email(user_id: int, subject: str) -> None:
    OUTBOX.mkdir(parents=True, exist_ok=True)
    (OUTBOX / f"mail-{user_id}.txt").write_text(subject)


# The ConcurrentRateLimiter in the body became an option: at most one push runs at a time, cluster-wide.
@job(
    expires="1h",
    concurrency=1,
    retry=Backoff(max_retries=20, base="15s", cap="7d", jitter=True),
    aliases=["push.v2"],
)
def push(device: str, text: str) -> None:
    OUTBOX.mkdir(parents=True, exist_ok=True)
    (OUTBOX / f"push-{device}.txt").write_text(text)


def welcome(user_id: int, device: str) -> None:
    """Unchanged call sites: .send() and .send_with_options(delay=ms) work on taskbridge jobs."""
    send_email.send(user_id, "Welcome!")
    push.send_with_options(args=(device, "Hello"), delay=5_000)
