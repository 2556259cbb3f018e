"""One Celery task per job: its body hands the envelope to the runner, then tells Celery the outcome."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from taskbridge import JobSpec
from taskbridge.engine import MessageRunner
from taskbridge.outcomes import Outcome

from . import pool_trace
from .pool_trace import DECIDED
from .states import settle
from .wire import envelope_text, read_whole_body

log = logging.getLogger("taskbridge.celery")

REQUEUE_PAUSE = 1.0
"""Seconds a child waits before requeueing a message the runner could not decide (the coordination
store is down, so the job did not run), so a persistent outage does not spin."""


class EnvelopeTask(Task):  # type: ignore[misc]
    """Base of every job's task: late acks, requeue on a lost child, no Celery retries or results."""

    Request = "taskbridge_celery.request:EnvelopeRequest"
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    typing = False
    max_retries = 0
    reads_whole_body = False
    """Whether the task takes a body taskbridge wrote whole, as its one argument (wire.whole_body)."""


def register(app: Celery, spec: JobSpec, runner: MessageRunner) -> Task:
    """Register the task named after ``spec``; ``hard_timeout`` becomes Celery's ``time_limit``."""

    def run_delivered(args: tuple[Any, ...], kwargs: dict[str, Any], delivery: dict[str, Any]) -> Outcome:
        queue = delivery.get("routing_key")
        redelivered = delivery.get("redelivered") is True
        try:
            if len(args) == 1 and type(args[0]) is bytes:  # the whole body (wire.whole_body)
                envelope = read_whole_body(args[0])
                if envelope is not None:
                    return runner.run(envelope, queue, redelivered=redelivered)
                fallback = queue or spec.resolved_queue(app.conf.task_default_queue)
                return runner.run_item(args[0], fallback, redelivered=redelivered)
            return _run_decoded(args, kwargs, queue, redelivered)
        except Exception as exc:
            # The runner stores a decided outcome until it sticks (taskbridge.carrying); it raises only
            # when it could not decide one, before the job ran: keep the message for another try.
            log.exception("job %s: the message could not be handled; it is requeued", spec.name)
            time.sleep(REQUEUE_PAUSE)
            raise Reject(exc, requeue=True) from exc

    def handle(task: Task, *args: Any, **kwargs: Any) -> Any:
        request = task.request
        decided = getattr(request, DECIDED, None)  # the pool process already ran it (pool_trace)
        if decided is None:
            decided = run_delivered(args, kwargs, request.delivery_info or {})
        elif isinstance(decided, Exception):
            raise decided
        return settle(decided)

    def _run_decoded(args: tuple[Any, ...], kwargs: dict[str, Any], queue: str | None, redelivered: bool) -> Outcome:
        """Arguments Celery decoded from a body taskbridge's producers did not write byte for byte."""
        text = envelope_text(args, kwargs)
        if text is None:
            # The consumer lets only one-envelope bodies through; this names what else came.
            body = json.dumps([args, kwargs, {}], default=repr)
            fallback = queue or spec.resolved_queue(app.conf.task_default_queue)
            return runner.run_item(body, fallback, redelivered=redelivered)
        return runner.run(text, queue, redelivered=redelivered)

    handle.__name__ = handle.__qualname__ = spec.name.rsplit(".", 1)[-1]
    handle.__module__ = spec.func.__module__
    task: Task = app.task(
        name=spec.name,
        base=EnvelopeTask,
        bind=True,
        time_limit=spec.hard_timeout,
        soft_time_limit=None,
        reads_whole_body=True,
    )(handle)
    pool_trace.register(app, spec.name, run_delivered)
    return task
