"""What one item on a broker queue holds: the envelope inside any engine's wrapper, or why there is none.

An item in a queue may have been written by any engine on that transport, by an older or newer
producer, or by something else entirely. Every engine's consumer hands the item's raw bytes here
before its own decoder sees them, so that whatever the bytes, the runner either gets an envelope to
run or a reason to dead-letter the item. Recognised wrappers, outermost first:

- kombu's virtual-transport message (Redis lists, SQS bodies): a JSON object with ``body``,
  ``content-type``, ``properties`` (``body_encoding``) and ``headers``;
- Dramatiq's message (``queue_name``, ``actor_name``, ``args``, ...), as JSON or base64 JSON (SQS);
- Celery's task protocol 2 body ``[args, kwargs, embed]`` whose only argument is the envelope;
- the bare envelope.

Only JSON is ever parsed: a body declared as pickle (or any other non-JSON content type) is refused
without being deserialized. The wrappers are matched by hand because each engine's own decoder
either trusts the item (and stops or loops the worker on bad bytes) or needs the engine installed.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import json
import lzma
import zlib
from collections.abc import Mapping
from typing import Any

from . import legacy
from .declared import lookup
from .envelope import encode_json
from .unwrapped import Unwrapped

JSON_CONTENT_TYPES = frozenset({"application/json", "text/json", "application/x-json"})
_MAX_DEPTH = 4
"""Wrappers nest at most kombu message > Celery body > envelope; deeper nesting is not a message."""


def unwrap(
    body: bytes | bytearray | str, *, content_type: str | None = None, headers: Mapping[str, Any] | None = None
) -> Unwrapped:
    """Find the envelope inside ``body``, whatever engine wrote it; never raises.

    ``content_type`` and ``headers`` are the transport's own message properties where it has them
    (AMQP): a non-JSON type is refused before the body is looked at, and Celery's ``task`` header
    lets a message of an old task name that a job declares in ``aliases=`` run (:mod:`.legacy`).
    """
    refused = _refused_content_type(content_type)
    if refused:
        return Unwrapped(None, refused)
    compression = headers.get("compression") if headers else None
    if compression:
        body, problem = _decompressed(body, compression)
        if problem is not None:
            return Unwrapped(None, problem)
    data, problem = _parse(body)
    if problem is not None:
        if isinstance(body, bytes | bytearray | str) and _looks_base64(body):
            decoded = _b64(body)
            if decoded is not None:
                inner, inner_problem = _parse(decoded)
                # Dramatiq on SQS, and kombu's SQS transport with its default sqs_base64_encoding.
                if inner_problem is None and isinstance(inner, dict) and (_is_dramatiq(inner) or _is_kombu(inner)):
                    return _classify(inner, 0, headers)
        if legacy.looks_pickled(body) or _looks_base64_pickle(body):
            return Unwrapped(None, f"the body is a pickle, which taskbridge never deserializes; {legacy.PICKLE_HINT}")
        return Unwrapped(None, problem)
    return _classify(data, 0, headers)


def _classify(data: Any, depth: int, headers: Mapping[str, Any] | None = None) -> Unwrapped:
    if depth > _MAX_DEPTH:
        return Unwrapped(None, "message wrappers nested too deep")
    if isinstance(data, dict):
        if _is_kombu(data):
            return _from_kombu(data, depth)
        if _is_dramatiq(data):
            return _from_dramatiq(data)
        if _is_celery_v1(data):
            return _from_celery_v1(data)
        if "job" in data or "id" in data:
            return Unwrapped(data, form="envelope")
        keys = ", ".join(sorted(str(k) for k in list(data)[:8]))
        return Unwrapped(None, f"a JSON object that is neither an envelope nor an engine message (keys: {keys})")
    if isinstance(data, list):
        return _from_celery(data, headers)
    return Unwrapped(None, f"a bare JSON {_json_type(data)}, not a message")


def _is_kombu(data: dict[str, Any]) -> bool:
    return "body" in data and ("properties" in data or "content-type" in data) and "job" not in data


RAW_ITEM_HEADER = "x-taskbridge-item"
"""Header of a kombu message whose base64 body is an item exactly as a queue held it (the Celery
engine wraps items kombu cannot read this way; a crashed worker's wrappers are restored as such)."""


def _from_kombu(data: dict[str, Any], depth: int) -> Unwrapped:
    headers = data.get("headers")
    if isinstance(headers, dict) and headers.get(RAW_ITEM_HEADER) and isinstance(data.get("body"), str):
        original = _b64(data["body"])
        if original is not None:
            return unwrap(original)
    refused = _refused_content_type(data.get("content-type"))
    if refused:
        return Unwrapped(None, refused, form="kombu")
    properties = data.get("properties")
    if not isinstance(properties, dict):
        return Unwrapped(None, f"kombu message 'properties' is {_json_type(properties)}", form="kombu")
    encoding = properties.get("body_encoding")
    inner: Any = data.get("body")
    if encoding == "base64":
        if not isinstance(inner, str):
            return Unwrapped(None, "kombu message body is not base64 text", form="kombu")
        decoded = _b64(inner)
        if decoded is None:
            return Unwrapped(None, "kombu message body is not valid base64", form="kombu")
        inner = decoded
    elif encoding not in (None, "utf-8"):
        return Unwrapped(None, f"kombu message body encoding {encoding!r} is not supported", form="kombu")
    inner_headers = data.get("headers")
    compression = inner_headers.get("compression") if isinstance(inner_headers, dict) else None
    if compression and isinstance(inner, bytes | str):
        inner, problem = _decompressed(inner, compression)
        if problem is not None:
            return Unwrapped(None, f"kombu message body: {problem}", form="kombu")
    if isinstance(inner, bytes | str):
        parsed, problem = _parse(inner)
        if problem is not None:
            return Unwrapped(None, f"kombu message body: {problem}", form="kombu")
        inner = parsed
    found = _classify(inner, depth + 1, inner_headers if isinstance(inner_headers, dict) else None)
    return Unwrapped(found.payload, found.reason and f"kombu message body: {found.reason}", form="kombu")


def _is_dramatiq(data: Any) -> bool:
    return isinstance(data, dict) and "actor_name" in data and "queue_name" in data


_DRAMATIQ_FIELDS: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": (int, float),
}


_DRAMATIQ_EXACT = {name: kind if isinstance(kind, tuple) else (kind,) for name, kind in _DRAMATIQ_FIELDS.items()}


def is_plain_dramatiq(data: Any) -> bool:
    """Whether ``data`` (parsed JSON) is a Dramatiq message as Dramatiq writes it: every field
    present and of its type and no other, with exactly one envelope text as its argument. A consumer may build
    Dramatiq's message from it without :func:`unwrap`, unless it names a job's old name
    (:func:`taskbridge.legacy.is_legacy`)."""
    if type(data) is not dict or len(data) != len(_DRAMATIQ_EXACT):
        return False
    for name, kinds in _DRAMATIQ_EXACT.items():
        if type(data.get(name)) not in kinds:  # JSON gives exact types; a bool is not a number here
            return False
    args = data["args"]
    return len(args) == 1 and not data["kwargs"] and type(args[0]) is str


def parse_json(body: bytes | bytearray | str) -> Any:
    """``body`` parsed as strict JSON (NaN and infinities refused); raises ValueError (or
    UnicodeDecodeError, RecursionError) where :func:`unwrap` would name what is wrong."""
    return _DECODER.decode(body if isinstance(body, str) else bytes(body).decode("utf-8"))


def _from_dramatiq(data: dict[str, Any]) -> Unwrapped:
    # Strict: Dramatiq's own worker reads every one of these fields, and a message missing one was
    # not written by Dramatiq.
    for name, kind in _DRAMATIQ_FIELDS.items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            what = "missing" if name not in data else f"{_json_type(value)}"
            return Unwrapped(None, f"Dramatiq message field {name!r} is {what}", form="dramatiq")
    old = legacy.from_dramatiq(data)
    if old is not None:
        return old
    args, kwargs = data["args"], data["kwargs"]
    if len(args) != 1 or kwargs:
        reason = "Dramatiq message does not carry exactly one envelope argument"
        return Unwrapped(None, reason + _naming("actor", data["actor_name"]), form="dramatiq")
    found = _envelope_argument(args[0], "dramatiq")
    if found.payload is None:
        return Unwrapped(None, f"{found.reason}{_naming('actor', data['actor_name'])}", form="dramatiq")
    return Unwrapped(found.payload, form="dramatiq", message=data)


def _from_celery(data: list[Any], headers: Mapping[str, Any] | None = None) -> Unwrapped:
    old = legacy.from_celery(data, headers)
    if old is not None:
        return old
    if len(data) != 3 or not isinstance(data[0], list) or not isinstance(data[1], dict):
        return Unwrapped(None, "a JSON array that is not a Celery task body [args, kwargs, embed]", form="celery")
    args, kwargs = data[0], data[1]
    name = headers.get("task") if headers else None
    if len(args) != 1 or kwargs:
        reason = "Celery task body does not carry exactly one envelope argument"
        return Unwrapped(None, reason + _naming("task", name), form="celery")
    found = _envelope_argument(args[0], "celery")
    if found.payload is None:
        return Unwrapped(None, f"{found.reason}{_naming('task', name)}", form="celery")
    return found


def _naming(kind: str, name: Any) -> str:
    """The end of a dead-letter reason naming the task or actor an engine message is for, and that
    no job declares it when none does."""
    if not isinstance(name, str):
        return ""
    if lookup(name) is None and legacy.job_for_alias(name) is None:
        return f" (for {kind} {name!r}, which no job declares as its name or in aliases=)"
    return f" (for {kind} {name!r})"


_CELERY_V1_FIELDS = ("task", "id", "args", "kwargs")
_CELERY_V1_HEADERS = ("task", "id", "eta", "expires", "retries")
_CELERY_V1_EMBED = ("callbacks", "errbacks", "chain", "chord")


def _is_celery_v1(data: dict[str, Any]) -> bool:
    """Whether ``data`` is a Celery task protocol 1 body (``task_protocol=1``): the task's name, id,
    arguments and options in one object, with no headers."""
    return "job" not in data and all(name in data for name in _CELERY_V1_FIELDS)


def _from_celery_v1(data: dict[str, Any]) -> Unwrapped:
    """A protocol 1 body read as the protocol 2 body and headers Celery itself converts it to."""
    name = data["task"]
    if not isinstance(name, str):
        return Unwrapped(None, f"Celery protocol 1 message field 'task' is {_json_type(name)}", form="celery")
    headers = {key: data.get(key) for key in _CELERY_V1_HEADERS}
    embed = {key: data.get(key) for key in _CELERY_V1_EMBED}
    found = _from_celery([data["args"], data["kwargs"], embed], headers)
    if found.payload is None and legacy.job_for_alias(name) is None:
        reason = f"Celery protocol 1 message for task {name!r}, which no job declares in aliases= ({found.reason})"
        return Unwrapped(None, reason, form="celery")
    return found


def _envelope_argument(value: Any, form: str) -> Unwrapped:
    if isinstance(value, str):
        return Unwrapped(value, form=form)
    if isinstance(value, dict):
        return Unwrapped(value, form=form)
    return Unwrapped(None, f"{form} message argument is {_json_type(value)}, not an envelope", form=form)


def _refused_content_type(content_type: Any) -> str | None:
    if content_type in (None, ""):
        return None
    kind = str(content_type).split(";", 1)[0].strip().lower()
    if kind in JSON_CONTENT_TYPES:
        return None
    if "pickle" in kind or "python-serialize" in kind:
        refused = f"content type {content_type!r} (pickle) is refused: taskbridge never deserializes pickle"
        return f"{refused}; {legacy.PICKLE_HINT}"
    return f"content type {content_type!r} is not JSON"


MAX_DECOMPRESSED = 64 * 1024 * 1024
"""The most a compressed body may expand to; more is refused as a decompression bomb."""
_DECOMPRESSORS: dict[str, Any] = {
    # kombu's compression names (``task_compression='gzip'`` and ``'zlib'`` both write zlib data);
    # the standard library decodes them without importing kombu into the core.
    "application/x-gzip": zlib.decompressobj,
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


def _decompressed(body: bytes | bytearray | str, compression: Any) -> tuple[bytes, str | None]:
    """``body`` expanded as its ``compression`` header says (Celery's ``task_compression``), or why not."""
    make = _DECOMPRESSORS.get(str(compression).strip().lower())
    if make is None:
        return b"", f"compression {compression!r} is not supported (use gzip, zlib, bzip2 or lzma)"
    if isinstance(body, str):
        return b"", f"body compressed with {compression!r} is text, not bytes"
    try:
        expanded: bytes = make().decompress(bytes(body), MAX_DECOMPRESSED + 1)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        return b"", f"body is not valid {compression!r} data ({_short(exc)})"
    if len(expanded) > MAX_DECOMPRESSED:
        return b"", f"body compressed with {compression!r} expands to more than {MAX_DECOMPRESSED} bytes"
    return expanded, None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
"""One decoder for every item: ``json.loads`` with options builds a new one per call."""


def _parse(body: bytes | bytearray | str) -> tuple[Any, str | None]:
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"body is not UTF-8 ({exc.reason} at byte {exc.start})"
    if not body.strip():
        return None, "body is empty"
    try:
        return _DECODER.decode(body), None
    except (ValueError, RecursionError) as exc:
        return None, f"body is not JSON ({_short(exc)})"


def _looks_base64(body: bytes | bytearray | str) -> bool:
    """Whether ``body`` may be base64 of a JSON object (Dramatiq on SQS): ``{"`` encodes to ``eyJ``."""
    start = body[:3]
    return start in ("eyJ", b"eyJ")


def _looks_base64_pickle(body: bytes | bytearray | str) -> bool:
    """Whether ``body`` is base64 of a pickle (a pickling Dramatiq producer on SQS), from its first
    four characters alone: a pickle's ``\\x80`` encodes to ``gA``."""
    head = body[:4]
    if head[:2] not in ("gA", b"gA"):
        return False
    decoded = _b64(head)
    return decoded is not None and legacy.looks_pickled(decoded)


def _b64(text: bytes | bytearray | str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json_type(value: Any) -> str:
    names = {str: "string", bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def envelope_size(payload: str | dict[str, Any] | None) -> int:
    """The bytes of an unwrapped envelope as a producer writes it (ASCII-only JSON, the size
    producers check at enqueue), whatever wrapper, compression or escaping it came in."""
    if payload is None:
        return 0
    text = payload if isinstance(payload, str) else encode_json(payload)
    if text.isascii():
        return len(text)
    try:
        return len(encode_json(parse_json(text)))
    except (ValueError, RecursionError):
        return len(text.encode("utf-8"))


def readable_body(body: bytes | bytearray | str) -> tuple[str, str | None]:
    """The body as it can travel in a JSON dead-letter record: UTF-8 text as is, anything else as
    base64; the second value is ``"base64"`` in that case."""
    if isinstance(body, str):
        return body, None
    try:
        return bytes(body).decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(bytes(body)).decode("ascii"), "base64"
