"""The Celery adapter's jobs, with handlers on Celery's task signals that record what they see (a
worker whose users hook Celery's signals, as Django's fixup or OpenTelemetry do)."""

from __future__ import annotations

from typing import Any

from celery import signals
from celery_jobs import echo  # noqa: F401  (the jobs the worker runs)

from taskbridge.testing.jobs import record


@signals.task_prerun.connect(weak=False)
def _prerun(task_id: str, task: Any, **_: Any) -> None:
    record("celery:prerun", task=task.name, id=task_id)


@signals.task_postrun.connect(weak=False)
def _postrun(task_id: str, task: Any, state: str, **_: Any) -> None:
    record("celery:postrun", task=task.name, id=task_id, state=state)


@signals.task_success.connect(weak=False)
def _success(sender: Any, **_: Any) -> None:
    record("celery:success", task=sender.name, id=sender.request.id)
