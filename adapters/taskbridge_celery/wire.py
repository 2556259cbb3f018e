"""The Celery message (task protocol 2) that carries one envelope, and the envelope read back.

The body is ``[[<envelope JSON>], {}, <embed>]``: the envelope travels as the task's single
positional argument, spliced in as text so publishing never re-serializes it. Each publish gets
its own Celery task id; the envelope id stays the same across retries and hops.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from typing import Any

from taskbridge import Envelope

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
_BODY_TAIL = ',{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def message_body(envelope_text: str) -> bytes:
    """The Celery body whose only argument is the envelope."""
    return ("[[" + envelope_text + "]" + _BODY_TAIL).encode(CONTENT_ENCODING)


def message_headers(envelope: Envelope, task_id: str, eta: float | None) -> dict[str, Any]:
    """Celery protocol-2 headers: the task name is the job name; ``eta`` is a UNIX time or None."""
    return {
        "lang": "py",
        "task": envelope.job,
        "id": task_id,
        "shadow": None,
        "eta": None if eta is None else datetime.fromtimestamp(eta, tz=timezone.utc).isoformat(),
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": envelope.attempt - 1,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": f"<envelope {envelope.id} attempt {envelope.attempt}>",
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
    }


def new_task_id() -> str:
    """A fresh Celery task id (128 random bits, like uuid4, for less work)."""
    return os.urandom(16).hex()


def envelope_text(args: Any, kwargs: Any) -> str:
    """The raw envelope handed to the runner, from a task's decoded arguments.

    Anything that is not exactly one envelope (object or text) is passed on as JSON of what came,
    so the runner dead-letters it as malformed instead of Celery dropping it.
    """
    if isinstance(args, list | tuple) and len(args) == 1 and not kwargs:
        (only,) = args
        if isinstance(only, str):
            return only
        if isinstance(only, dict):
            return json.dumps(only, separators=(",", ":"))
    return json.dumps({"celery_args": args, "celery_kwargs": kwargs}, default=repr)


def payload_text(payload: Any) -> str | None:
    """The envelope inside a decoded Celery body ``(args, kwargs, embed)``, if it has that shape."""
    if isinstance(payload, list | tuple) and len(payload) == 3:
        return envelope_text(payload[0], payload[1])
    return None
