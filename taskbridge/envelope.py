"""The envelope: the one JSON message every engine carries for a job, and its strict codec."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, overload

from .errors import EnqueueError, EnvelopeError

VERSION = 1
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_OPTIONAL_FLOAT = (float, type(None))
TAKES_RESULT = "takes_result"
"""Chain step flag: the step receives the previous step's return value as its first argument.
Absent (as written by earlier versions, and by ``.si()``) means it does not."""
_STEP_KEYS = frozenset({"job", "args", "kwargs", TAKES_RESULT})
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "job": str,
    "args": list,
    "kwargs": dict,
    "queue": str,
    "attempt": int,
    "enqueued_at": float,
    "expires_at": _OPTIONAL_FLOAT,
    "not_before": _OPTIONAL_FLOAT,
    "chain": list,
    "headers": dict,
    "v": int,
}


@dataclass(frozen=True)
class Envelope:
    """One job invocation as it travels through a transport.

    ``attempt`` starts at 1 and grows only on retries; rate-limit, lock and delay
    deferrals republish the same attempt.
    """

    job: str
    queue: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: os.urandom(16).hex())
    attempt: int = 1
    enqueued_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    not_before: float | None = None
    chain: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, Any] = field(default_factory=dict)
    v: int = VERSION

    def with_changes(self, **changes: Any) -> Envelope:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; arguments and headers are shared with the envelope, not copied."""
        return dict(vars(self))

    def encode(self) -> str:
        """The JSON text sent over the wire."""
        return _encode(vars(self))


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder() -> Callable[[Any, int], Sequence[str]] | None:
    """``_ENCODER``'s C encoder (the chunks of a value's JSON), made once rather than on every
    ``encode`` (most of its time for a small value). It keeps no record of the containers it is in,
    so a value that contains itself raises ``RecursionError`` rather than ``ValueError``. None where
    there is no C encoder."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    chunks: Callable[[Any, int], Sequence[str]] = make(
        None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return chunks


def _compact_encoder(chunks: Callable[[Any, int], Sequence[str]] | None) -> Callable[[Any], str]:
    """``_ENCODER.encode`` through the C encoder made once (``_ENCODER.encode`` without one)."""
    if chunks is None:
        return _ENCODER.encode
    join = "".join
    return lambda value: join(chunks(value, 0))


_chunks = _c_encoder()
_encode = _compact_encoder(_chunks)

_SCALARS = frozenset({str, int, float, bool, type(None)})
_STRINGS = frozenset({str})
_TUPLES = frozenset({tuple})
_INTS = frozenset({int})


def scalar_args_texts(calls: Sequence[Any]) -> list[str] | None:
    """The JSON texts of ``calls`` when each is a tuple of positional arguments that are all plain
    scalars (str, int, float, bool, None), encoded together; None for anything else, or for a float
    that is NaN or infinite (then each call takes :func:`json_arguments`, which names what is wrong)."""
    if not _TUPLES.issuperset(map(type, calls)):
        return None
    kinds = set(map(type, itertools.chain.from_iterable(calls)))
    if not _SCALARS.issuperset(kinds):
        return None
    if kinds <= _INTS and calls:
        lengths = set(map(len, calls))
        if len(lengths) == 1:  # the common call, ids: an int's JSON is its decimal text, as %d writes it
            return list(map(f"[{','.join(['%d'] * lengths.pop())}]".__mod__, calls))
    try:
        if _chunks is None:
            return list(map(_encode, calls))
        return list(map("".join, map(_chunks, calls, itertools.repeat(0))))  # no Python frame per call
    except ValueError:
        return None


def encode_json(value: Any) -> str:
    """Compact JSON as on the wire (ASCII only, so its length is its size in bytes); NaN is refused."""
    return _ENCODER.encode(value)


def check_json_arguments(job: str, args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    """Raise :class:`EnqueueError` naming the job and argument if any argument is not plain JSON;
    return the size in bytes of the arguments' JSON."""
    try:
        text = _encode([args, kwargs])
        if (
            _SCALARS.issuperset(map(type, args))
            and _STRINGS.issuperset(map(type, kwargs))
            and _SCALARS.issuperset(map(type, kwargs.values()))
        ):
            return len(text)  # scalars survive the round trip; NaN and infinities were refused above
        if json.loads(text) == [list(args), kwargs]:
            return len(text)  # the common case; the checks below find and name the offending argument
    except (TypeError, ValueError, RecursionError):
        pass
    for index, value in enumerate(args):
        _check_json_value(job, f"positional argument {index}", value)
    for name, value in kwargs.items():
        if not isinstance(name, str):
            raise EnqueueError(f"job {job!r}: keyword argument names must be strings, got {name!r}")
        _check_json_value(job, f"argument {name!r}", value)
    return len(_ENCODER.encode([list(args), kwargs]))


def json_arguments(job: str, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
    """The JSON texts of ``args`` and ``kwargs`` as an envelope carries them, checked as
    :func:`check_json_arguments` checks them (the same error when they are not plain JSON)."""
    try:
        args_text = _encode(args) if args else "[]"
        if not kwargs:
            if _SCALARS.issuperset(map(type, args)) or json.loads(args_text) == list(args):
                return args_text, "{}"
        else:
            kwargs_text = _encode(kwargs)
            # JSON writes keys that are numbers as strings: such a key fails both checks.
            if _STRINGS.issuperset(map(type, kwargs)) and (
                (_SCALARS.issuperset(map(type, args)) and _SCALARS.issuperset(map(type, kwargs.values())))
                or (json.loads(args_text) == list(args) and json.loads(kwargs_text) == kwargs)
            ):
                return args_text, kwargs_text
    except (TypeError, ValueError, RecursionError):
        pass
    check_json_arguments(job, args, kwargs)  # raises, naming the argument
    return _ENCODER.encode(list(args)), _ENCODER.encode(kwargs)


def _check_json_value(job: str, where: str, value: Any) -> None:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EnqueueError(
            f"job {job!r}: {where} is not JSON-serializable ({type(value).__name__}: {exc}); "
            "pass plain JSON values (str, int, float, bool, None, list, dict with str keys), "
            "e.g. an id instead of an object"
        ) from None
    if json.loads(text) != value:
        raise EnqueueError(
            f"job {job!r}: {where} does not survive a JSON round trip "
            f"({type(value).__name__} would arrive changed); pass lists, dicts with str keys and plain values"
        )


_BACKSLASH, _ESCAPED_BACKSLASH, _QUOTE, _ESCAPED_QUOTE = "\\", "\\\\", '"', '\\"'
_ID_POOL = 256
"""Ids drawn from the system's random source at once by a batch (one call instead of one per envelope)."""


class EnvelopeBatch(Sequence[Envelope]):
    """Envelopes of one job built together for one publish: the same queue, times and headers, each
    with its own id and arguments (``attempt`` 1, no chain).

    Their JSON texts (:attr:`texts`, the same bytes :meth:`Envelope.encode` writes) are rendered from a
    template made once per batch, so an engine that sends text pays no per-envelope encoding; an engine
    that wants objects reads the batch as the sequence of :class:`Envelope` it is.
    """

    def __init__(
        self,
        job: str,
        queue: str,
        *,
        enqueued_at: float,
        expires_at: float | None,
        not_before: float | None,
        headers: dict[str, Any],
    ) -> None:
        self.job = job
        self.queue = queue
        self.enqueued_at = enqueued_at
        self.expires_at = expires_at
        self.not_before = not_before
        self.headers = headers
        self.ids: list[str] = []
        # The calls' own arguments, copied when an Envelope is made of them (an Envelope owns its
        # list and dict): a batch of scalar tuples then holds no container per call of its own,
        # which keeps the garbage collector from walking thousands of them per batch.
        self.args: list[Sequence[Any]] = []
        self.kwargs: list[dict[str, Any]] = []
        self._args_texts: list[str] = []
        self._kwargs_texts: list[str] = []
        self._texts: list[str] | None = None
        self._spare_ids: list[str] = []
        encode = _ENCODER.encode
        self._head = f'{{"job":{encode(job)},"queue":{encode(queue)},"args":'
        self._tail = (
            f',"attempt":1,"enqueued_at":{encode(enqueued_at)},"expires_at":{encode(expires_at)},'
            f'"not_before":{encode(not_before)},"chain":[],"headers":{encode(headers)},"v":{VERSION}}}'
        )
        # Everything of an envelope's text but its arguments' JSON.
        self.frame = len(self._head) + len(self._tail) + len(',"kwargs":,"id":""') + 32

    def add(self, args: Sequence[Any], kwargs: dict[str, Any], args_text: str, kwargs_text: str) -> str:
        """Add the call whose arguments encode to ``args_text`` and ``kwargs_text``; returns its id."""
        if not self._spare_ids:
            pool = os.urandom(16 * _ID_POOL).hex()
            self._spare_ids = [pool[i : i + 32] for i in range(0, 32 * _ID_POOL, 32)]
        envelope_id = self._spare_ids.pop()
        self.ids.append(envelope_id)
        self.args.append(tuple(args))
        self.kwargs.append(dict(kwargs))
        self._args_texts.append(args_text)
        self._kwargs_texts.append(kwargs_text)
        self._texts = None
        return envelope_id

    def extend(
        self,
        args: Sequence[Sequence[Any]],
        kwargs: Sequence[dict[str, Any]],
        args_texts: Sequence[str],
        kwargs_texts: Sequence[str],
    ) -> None:
        """:meth:`add` each of several calls (the i-th of each sequence is one call), with their ids
        drawn from the system's random source at once. Tuples of arguments are kept as they are, other
        sequences and the kwargs dicts are copied."""
        count = len(args_texts)
        if not count:
            return
        pool = os.urandom(16 * count).hex()
        self.ids += [pool[i : i + 32] for i in range(0, 32 * count, 32)]
        self.args += (call if type(call) is tuple else tuple(call) for call in args)
        self.kwargs += (call if not call else dict(call) for call in kwargs)
        self._args_texts += args_texts
        self._kwargs_texts += kwargs_texts
        self._texts = None

    @property
    def texts(self) -> list[str]:
        """The JSON text of each envelope, in order."""
        if self._texts is None:
            self._texts = self.wrapped_texts("", "")
        return self._texts

    def wrapped_texts(self, before: str, after: str) -> list[str]:
        """``before + text + after`` for the JSON text of each envelope, rendered in one piece."""
        head, tail = before + self._head, self._tail + after
        return [
            f'{head}{a},"kwargs":{k},"id":"{i}"{tail}'
            for a, k, i in zip(self._args_texts, self._kwargs_texts, self.ids, strict=True)
        ]

    def quoted_texts(self) -> list[str]:
        """The JSON text of each envelope as a JSON string, quotes included: what ``json.dumps`` (ASCII
        only) writes for :attr:`texts`, rendered from a quoted template."""
        quote = json.encoder.encode_basestring_ascii
        head, tail = quote(self._head)[:-1], quote(self._tail)[1:]
        middle, before_id = quote(',"kwargs":')[1:-1], quote(',"id":"')[1:-1]
        # JSON text is ASCII without control characters: quoting it escapes only '\\' and '"'.
        return [
            f"{head}{a.replace(_BACKSLASH, _ESCAPED_BACKSLASH).replace(_QUOTE, _ESCAPED_QUOTE)}{middle}"
            f'{k.replace(_BACKSLASH, _ESCAPED_BACKSLASH).replace(_QUOTE, _ESCAPED_QUOTE)}{before_id}{i}\\"{tail}'
            for a, k, i in zip(self._args_texts, self._kwargs_texts, self.ids, strict=True)
        ]

    def with_not_before(self, not_before: float) -> EnvelopeBatch:
        """The same envelopes, due at ``not_before``."""
        batch = EnvelopeBatch(
            self.job,
            self.queue,
            enqueued_at=self.enqueued_at,
            expires_at=self.expires_at,
            not_before=not_before,
            headers=self.headers,
        )
        batch.ids, batch.args, batch.kwargs = self.ids, self.args, self.kwargs
        batch._args_texts, batch._kwargs_texts = self._args_texts, self._kwargs_texts
        return batch

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Envelope: ...

    @overload
    def __getitem__(self, index: slice) -> list[Envelope]: ...

    def __getitem__(self, index: int | slice) -> Envelope | list[Envelope]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Envelope(
            job=self.job,
            queue=self.queue,
            args=list(self.args[index]),
            kwargs=dict(self.kwargs[index]),
            id=self.ids[index],
            enqueued_at=self.enqueued_at,
            expires_at=self.expires_at,
            not_before=self.not_before,
            headers=dict(self.headers),
        )


def envelope_texts(envelopes: Sequence[Envelope]) -> list[str]:
    """The JSON text of each envelope (rendered once per batch for an :class:`EnvelopeBatch`)."""
    if isinstance(envelopes, EnvelopeBatch):
        return envelopes.texts
    return [envelope.encode() for envelope in envelopes]


_ABSENT = object()
_EXACT: dict[str, frozenset[type]] = {
    name: frozenset(kind if isinstance(kind, tuple) else (kind,)) for name, kind in _FIELDS.items()
}


def _well_typed(data: dict[str, Any]) -> bool:
    """Whether ``data`` is an envelope as producers write it: every field present, of exactly its type
    (JSON parsing makes no subclasses), attempt at least 1, no chain. Anything else takes the
    field-by-field checks, which name what is wrong."""
    if len(data) != len(_EXACT) or data.get("chain"):
        return False
    for name, kinds in _EXACT.items():
        if type(data.get(name, _ABSENT)) not in kinds:
            return False
    return data["attempt"] >= 1 and data["v"] <= VERSION


def _reject_constant(name: str) -> Any:
    raise EnvelopeError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""One decoder for every body: ``json.loads`` with options builds a new one per call."""
_new_envelope = object.__new__
_BYTES = (bytes, bytearray)
"""A tuple, not ``bytes | bytearray``, which would build a union object on every decode."""
_FIELD_ORDER = tuple(field.name for field in fields(Envelope))


def decode(body: str | bytes | bytearray | dict[str, Any]) -> Envelope:
    """Parse and validate a message body; raise :class:`EnvelopeError` on anything malformed."""
    if isinstance(body, _BYTES):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"message body is not UTF-8: {exc}") from None
    if isinstance(body, str):
        try:
            data = _DECODER.decode(body)
        except (json.JSONDecodeError, EnvelopeError) as exc:
            raise EnvelopeError(f"message body is not JSON: {exc}") from None
    else:
        data = body
    if not isinstance(data, dict):
        raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")
    version = data.get("v", VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        # Checked first: a newer producer's envelope may well carry fields this worker does not know.
        raise EnvelopeError(f"envelope version {version} is newer than this worker understands ({VERSION})")
    if _well_typed(data):
        # Every field present and of its type: set them as they are, without the frozen
        # dataclass's per-field ``object.__setattr__`` (a worker decodes one envelope per message).
        envelope = _new_envelope(Envelope)
        if tuple(data) == _FIELD_ORDER:
            vars(envelope).update(data)
        else:  # the fields in the dataclass's order, as encode() writes them
            vars(envelope).update((name, data[name]) for name in _FIELD_ORDER)
        return envelope
    if "id" not in data or "job" not in data or "queue" not in data:
        missing = [name for name in ("id", "job", "queue") if name not in data]
        raise EnvelopeError(f"envelope lacks required fields: {', '.join(missing)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = _FIELDS.get(name)
        if kind is None:
            unknown = sorted(str(n) for n in set(data) - set(_FIELDS))
            raise EnvelopeError(f"envelope has unknown fields: {', '.join(unknown)}")
        if (kind is float or kind is _OPTIONAL_FLOAT) and type(value) is int:
            value = float(value)
        if type(value) is bool or not isinstance(value, kind):
            raise EnvelopeError(f"envelope field {name!r} has the wrong type: {value!r}")
        values[name] = value
    if values.get("attempt", 1) < 1:
        raise EnvelopeError("envelope field 'attempt' must be at least 1")
    for step in values.get("chain", ()):
        if not (
            isinstance(step, dict)
            and isinstance(step.get("job"), str)
            and isinstance(step.get("args", []), list)
            and isinstance(step.get("kwargs", {}), dict)
            and type(step.get(TAKES_RESULT, True)) is bool
            and set(step) <= _STEP_KEYS
        ):
            raise EnvelopeError(f"envelope field 'chain' holds a malformed step: {step!r}")
    return Envelope(**values)


def is_queue_name(name: object) -> bool:
    """Whether ``name`` is usable as a queue on every transport: ASCII letters, digits, '-', '_', '.'."""
    return isinstance(name, str) and _QUEUE_NAME.match(name) is not None


def peek_job_name(body: str | bytes | bytearray | dict[str, Any]) -> str | None:
    """Best-effort job name of a possibly malformed body, for error reports."""
    name = _peek(body, "job")
    return name or None


def peek_id(body: str | bytes | bytearray | dict[str, Any]) -> str | None:
    """Best-effort id of a possibly malformed body."""
    return _peek(body, "id")


def peek_queue(body: str | bytes | bytearray | dict[str, Any]) -> str | None:
    """Best-effort queue of a possibly malformed body, to dead-letter it next to its queue; None
    unless it is a plain queue name (letters, digits, '-', '_', '.')."""
    queue = _peek(body, "queue")
    return queue if is_queue_name(queue) else None


def _peek(body: str | bytes | bytearray | dict[str, Any], name: str) -> str | None:
    try:
        data = body if isinstance(body, dict) else json.loads(body)
    except (ValueError, TypeError):
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
