"""A pool process runs a job's task without Celery's tracer when nothing would see the difference.

Celery's tracer wraps every task call in a pool process: a request context, signals, result
storage, chains and callbacks, a success log line. For a taskbridge task nothing of that applies
to a job that ran (the runner already carried out the outcome, there is no result backend, the
body carries no Celery callbacks), yet it costs about as much CPU per message as the runner
itself, and on a prefetch-bound drain (late acks) every microsecond of the pool process delays
the next delivery. So a job that ran goes back to the worker's main process as Celery's tracer
would send it (its value, shown as Celery shows it, and its run time), with Celery's own success
log line when its trace logger logs at INFO, and Celery's tracer is used whenever it would do more
than that:

* something listens to Celery's ``task_prerun``, ``task_postrun`` or ``task_success`` signals
  (Django's fixup, OpenTelemetry's instrumentation, the user's own handlers);
* the app's loader does work as a task starts;
* ``celery.app.trace.build_tracer`` was wrapped by an integration (Sentry's, for one);
* the job did not simply run to the end (retried, deferred, skipped, dead-lettered, or the message
  could not be handled): the outcome, already carried out, is handed to Celery's tracer, which
  ends the task with the matching state, log line and event, as without this module.

Written by hand: Celery offers no switch for it. Job code never sees Celery's ``current_task``
(taskbridge jobs do not depend on the engine's task object).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, signals
from celery.app import trace as celery_trace
from celery.loaders.base import BaseLoader
from celery.utils.saferepr import saferepr
from kombu.utils.encoding import safe_repr

from taskbridge.outcomes import Done, Outcome

DECIDED = "taskbridge_decided"
"""The request field that hands Celery's tracer the outcome (or the exception) of a run that
already happened, so the task body does not run the job again."""

RunDelivered = Callable[[tuple[Any, ...], dict[str, Any], dict[str, Any]], Outcome]
"""A job task's run: ``(args, kwargs, delivery_info) -> outcome``; raises Reject when the message
goes back to the queue."""

_LISTENED = (signals.task_prerun, signals.task_postrun, signals.task_success)
_RUNS: weakref.WeakKeyDictionary[Celery, dict[str, RunDelivered]] = weakref.WeakKeyDictionary()
"""Per app, the job tasks (by name) and their runs."""


def register(app: Celery, name: str, run: RunDelivered) -> None:
    """Let the task ``name`` of ``app`` run through ``run`` in pool processes (installed as each one
    starts)."""
    _RUNS.setdefault(app, {})[name] = run


def _celery_would_do_more(task: Task) -> bool:
    if any(signal.receivers for signal in _LISTENED):
        return True
    return type(task.app.loader).on_task_init is not BaseLoader.on_task_init


def _lean(task: Task, run: RunDelivered, full: Callable[..., Any]) -> Callable[..., Any]:
    maxsize = task.resultrepr_maxsize

    def trace(uuid: str, args: Any, kwargs: Any, request: dict[str, Any] | None = None) -> Any:
        if request is None or _celery_would_do_more(task):
            return full(uuid, args, kwargs, request)
        started = time.monotonic()
        try:
            decided: Outcome | Exception = run(args, kwargs, request.get("delivery_info") or {})
        except Exception as exc:  # Reject: Celery's tracer requeues the message
            decided = exc
        if type(decided) is Done:
            value, runtime = decided.value, time.monotonic() - started
            shown = saferepr(value, maxsize)
            if celery_trace.logger.isEnabledFor(logging.INFO):
                _log_success(task, uuid, args, kwargs, request, shown, runtime)
            return celery_trace.trace_ok_t(value, None, runtime, shown)
        request[DECIDED] = decided
        return full(uuid, args, kwargs, request)

    return trace


def _tracer_wrapped() -> bool:
    """Whether an integration replaced Celery's ``build_tracer`` (whenever it was imported)."""
    built = celery_trace.build_tracer
    return hasattr(built, "__wrapped__") or getattr(built, "__module__", None) != celery_trace.__name__


def _log_success(
    task: Task, uuid: str, args: Any, kwargs: Any, request: dict[str, Any], shown: str, runtime: float
) -> None:
    """Celery's ``Task ...[id] succeeded in ...s: <value>`` line, as its tracer logs it."""
    context = {
        "id": uuid,
        "name": request.get("shadow") or task.name,
        "return_value": shown,
        "runtime": runtime,
        "args": request.get("argsrepr") or safe_repr(args),
        "kwargs": request.get("kwargsrepr") or safe_repr(kwargs),
    }
    celery_trace.info(celery_trace.LOG_SUCCESS, context)


def _install(**_: Any) -> None:
    """In a pool process, after Celery built each task's tracer (``worker_process_init``)."""
    if _tracer_wrapped():
        return
    for app, runs in list(_RUNS.items()):
        for name, run in runs.items():
            task = app.tasks.get(name)
            if task is not None and task.__trace__ is not None:
                task.__trace__ = _lean(task, run, task.__trace__)


signals.worker_process_init.connect(_install, weak=False, dispatch_uid="taskbridge-pool-trace")
