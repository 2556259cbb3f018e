"""What a worker runs on a RabbitMQ queue another client declared first: the job that keeps an old
Celery task's and Dramatiq actor's names, and the contract's own jobs."""

from __future__ import annotations

from legacy_jobs import send_report

from taskbridge.testing.jobs import echo, flaky

__all__ = ["echo", "flaky", "send_report"]
