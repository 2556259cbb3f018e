"""The Celery message (task protocol 2) that carries one envelope, and the envelope read back.

The body is ``[[<envelope JSON>], {}, <embed>]``: the envelope travels as the task's single
positional argument, spliced in as text so publishing never re-serializes it. The Celery task id
is the envelope's id, so Celery's log, events and Flower show the id taskbridge reports; like a
Celery retry, every attempt and hop of one job keeps it.
"""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import datetime, timezone
from typing import Any

from taskbridge import Envelope
from taskbridge.wire import parse_json

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
BODY_HEAD = "[["
BODY_TAIL = '],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
"""What a Celery body holds before and after the envelope's text."""
_HEAD = BODY_HEAD.encode(CONTENT_ENCODING)
_TAIL = BODY_TAIL.encode(CONTENT_ENCODING)
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""What an envelope id must look like to be shown as the Celery task id (ours are 32 hex digits)."""


def message_body(envelope_text: str) -> bytes:
    """The Celery body whose only argument is the envelope."""
    return (BODY_HEAD + envelope_text + BODY_TAIL).encode(CONTENT_ENCODING)


def message_headers(envelope: Envelope, task_id: str, eta: float | None) -> dict[str, Any]:
    """Celery protocol-2 headers: the task name is the job name; ``eta`` is a UNIX time or None."""
    headers = task_headers(envelope.job, task_id, f"<envelope attempt {envelope.attempt}>")
    headers["retries"] = envelope.attempt - 1
    if eta is not None:
        headers["eta"] = datetime.fromtimestamp(eta, tz=timezone.utc).isoformat()
    return headers


def task_headers(job: str, task_id: str, argsrepr: str) -> dict[str, Any]:
    """Celery protocol-2 headers of a task named ``job`` due now."""
    return {
        "lang": "py",
        "task": job,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
    }


def task_id_for(envelope_id: object) -> str:
    """The Celery task id of an envelope: its own id when it fits a task id, else a fresh one."""
    if isinstance(envelope_id, str) and _TASK_ID.fullmatch(envelope_id):
        return envelope_id
    return new_task_id()


def new_task_id() -> str:
    """A fresh Celery task id (128 random bits, like uuid4, for less work)."""
    return os.urandom(16).hex()


WholeBody = tuple[tuple[bytes], dict[str, Any], None]
"""A Celery payload ``(args, kwargs, embed)`` whose only argument is the message's whole body."""


def whole_body(body: object) -> WholeBody | None:
    """The payload that hands a job's task ``body`` as it came, when it is a body taskbridge writes
    (:func:`message_body`): the pool process reads the envelope out of it (:func:`read_whole_body`),
    so neither the worker's main process nor kombu's JSON reader parses it on the way there."""
    if type(body) is str:
        body = body.encode(CONTENT_ENCODING)
    if type(body) is bytes and len(body) > len(_HEAD) + len(_TAIL) and body.startswith(_HEAD) and body.endswith(_TAIL):
        return ((body,), {}, None)
    return None


def is_whole_body(payload: object) -> bool:
    """Whether a message's decoded payload is one :func:`whole_body` made (JSON gives lists, never tuples)."""
    return type(payload) is tuple


def read_whole_body(body: bytes) -> dict[str, Any] | str | None:
    """The envelope inside a body :func:`whole_body` let through: its JSON object (or the JSON text of
    one, as a string argument), or None when what stands between head and tail is neither; the
    body then goes to the runner as an item, which dead-letters it with its exact bytes."""
    try:
        value = parse_json(body[len(_HEAD) : -len(_TAIL)])
    except (ValueError, RecursionError):  # not UTF-8 or not JSON
        return None
    return value if type(value) is dict or type(value) is str else None  # JSON makes no subclasses


def envelope_text(args: Any, kwargs: Any) -> str | None:
    """The envelope a task's decoded arguments carry, if they are exactly one envelope (text or
    object, or the whole body that holds it)."""
    if isinstance(args, list | tuple) and len(args) == 1 and not kwargs:
        (only,) = args
        if isinstance(only, bytes):
            only = read_whole_body(only) if whole_body(only) is not None else None
        if isinstance(only, str):
            return only
        if isinstance(only, dict):
            try:
                return json.dumps(only, separators=(",", ":"))
            except (TypeError, ValueError):  # kombu's JSON reader made objects of typed values
                return None
    return None


def carries_one_envelope(payload: Any) -> bool:
    """Whether a decoded Celery body is ``[[envelope], {}, embed]``, the only shape taskbridge sends."""
    return (
        isinstance(payload, list | tuple)
        and len(payload) == 3
        and isinstance(payload[0], list | tuple)
        and len(payload[0]) == 1
        and isinstance(payload[0][0], str | dict)
        and payload[1] == {}
        and isinstance(payload[2], dict | None)
    )
