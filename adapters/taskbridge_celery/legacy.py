"""Celery tasks for a job's old names (``@job(aliases=[...])``), so unmigrated producers' messages run.

Celery routes a message by its task name, so each alias is registered as a task too. Its body hands
the old message (arguments, ETA, expiry, retry count) to ``Runner.run_item`` like any item on the
wire, where :mod:`taskbridge.legacy` turns it into an envelope of the job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from kombu.message import Message

from taskbridge import JobSpec
from taskbridge.engine import MessageRunner
from taskbridge.legacy import carries_envelope
from taskbridge.wire import JSON_CONTENT_TYPES

from .tasks import REQUEUE_PAUSE, EnvelopeTask
from .wire import envelope_text

log = logging.getLogger("taskbridge.celery")


def register_aliases(app: Celery, spec: JobSpec, runner: Callable[[], MessageRunner]) -> None:
    """Register a task under each of ``spec.aliases`` whose body runs the old message as the job.

    An alias that is the job's own name replaces the job's task: its body then also runs envelopes."""
    for alias in spec.aliases:
        _register(app, spec, alias, runner)


def _register(app: Celery, spec: JobSpec, alias: str, runner: Callable[[], MessageRunner]) -> None:
    def handle(task: Task, *args: Any, **kwargs: Any) -> None:
        request = task.request
        queue = (request.delivery_info or {}).get("routing_key") or ""
        embed = {name: getattr(request, name, None) for name in ("callbacks", "errbacks", "chain", "chord")}
        headers = {
            "task": alias,
            "id": request.id,
            "eta": request.eta,
            "expires": request.expires,
            "retries": request.retries,
        }
        try:
            if alias == spec.name and carries_envelope(args, kwargs):
                runner().run(envelope_text(args, kwargs), queue)
            else:
                runner().run_item(json.dumps([list(args), kwargs, embed], default=repr), queue, headers=headers)
        except Exception as exc:
            log.exception("legacy task %s: the outcome could not be carried out; the message is requeued", alias)
            time.sleep(REQUEUE_PAUSE)
            raise Reject(exc, requeue=True) from exc

    handle.__name__ = handle.__qualname__ = alias.rsplit(".", 1)[-1]
    handle.__module__ = spec.func.__module__
    app.task(name=alias, base=EnvelopeTask, bind=True, time_limit=spec.hard_timeout, soft_time_limit=None)(handle)


def refuse_non_json(runner: MessageRunner, message: Message, queue: str | None) -> bool:
    """Dead-letter a message whose content type is not JSON (an old producer's pickle) through the
    wire layer, which says how to switch the producer; False for a JSON message."""
    content_type = message.content_type or ""
    if content_type.split(";", 1)[0].strip().lower() in JSON_CONTENT_TYPES:
        return False
    runner.run_item(message.body, queue or "", content_type=content_type, headers=message.headers or {})
    return True
