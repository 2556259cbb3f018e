"""Celery tasks for a job's old names (``@job(aliases=[...])``), so unmigrated producers' messages run.

Celery routes a message by its task name, so each alias is registered as a task too. Its body hands
the old message (arguments, ETA, expiry, retry count) to ``Runner.run_item`` like any item on the
wire, where :mod:`taskbridge.legacy` turns it into an envelope of the job.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from taskbridge import JobSpec
from taskbridge.engine import MessageRunner
from taskbridge.legacy import carries_envelope

from .tasks import REQUEUE_PAUSE, EnvelopeTask
from .wire import envelope_text

log = logging.getLogger("taskbridge.celery")

_CALLBACKS = ("callbacks", "errbacks", "chain", "chord")
"""The Celery request fields that name work to do after the task."""


def register_aliases(app: Celery, spec: JobSpec, runner: MessageRunner) -> None:
    """Register a task under each of ``spec.aliases`` whose body runs the old message as the job.

    An alias that is the job's own name replaces the job's task: its body then also runs envelopes."""
    for alias in spec.aliases:
        _register(app, spec, alias, runner)


def _register(app: Celery, spec: JobSpec, alias: str, runner: MessageRunner) -> None:
    def handle(task: Task, *args: Any, **kwargs: Any) -> None:
        request = task.request
        queue = (request.delivery_info or {}).get("routing_key") or ""
        embed = {name: getattr(request, name, None) for name in _CALLBACKS}
        for name in _CALLBACKS:
            # Celery applies these itself once the task returns: the job's outcome (a message with
            # callbacks is dead-lettered, not half run) is taskbridge's, so Celery must not.
            setattr(request, name, None)
        headers = {
            "task": alias,
            "id": request.id,
            "eta": request.eta,
            "expires": request.expires,
            "retries": request.retries,
        }
        text = envelope_text(args, kwargs) if alias == spec.name and carries_envelope(args, kwargs) else None
        try:
            if text is not None:
                runner.run(text, queue)
            else:
                runner.run_item(json.dumps([list(args), kwargs, embed], default=repr), queue, headers=headers)
        except Exception as exc:
            log.exception("legacy task %s: the outcome could not be carried out; the message is requeued", alias)
            time.sleep(REQUEUE_PAUSE)
            raise Reject(exc, requeue=True) from exc

    handle.__name__ = handle.__qualname__ = alias.rsplit(".", 1)[-1]
    handle.__module__ = spec.func.__module__
    app.task(name=alias, base=EnvelopeTask, bind=True, time_limit=spec.hard_timeout, soft_time_limit=None)(handle)
