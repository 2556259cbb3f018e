"""The envelope: JSON round trip, the strict decoder, and argument checks at enqueue."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskbridge.envelope import (
    VERSION,
    Envelope,
    EnvelopeBatch,
    check_json_arguments,
    decode,
    envelope_texts,
    json_arguments,
    peek_job_name,
    peek_queue,
    scalar_args_texts,
)
from taskbridge.errors import EnqueueError, EnvelopeError


def full_envelope() -> Envelope:
    return Envelope(
        job="billing.charge",
        queue="payments",
        args=[1, "zürich ✓", None, [1.5, {"x": True}]],
        kwargs={"user_id": 42, "meta": {"k": [1, 2]}},
        attempt=3,
        expires_at=1_900_000_000.5,
        not_before=1_800_000_000.0,
        chain=[{"job": "billing.receipt", "args": [1], "kwargs": {}}],
        headers={"unique": "unique:billing.charge:42"},
    )


def body(**changes: Any) -> dict[str, Any]:
    data = json.loads(full_envelope().encode())
    data.update(changes)
    return data


def test_round_trip_keeps_every_field() -> None:
    envelope = full_envelope()
    text = envelope.encode()
    assert decode(text) == envelope
    assert decode(text.encode("utf-8")) == envelope
    assert set(json.loads(text)) == {
        "id",
        "job",
        "args",
        "kwargs",
        "queue",
        "attempt",
        "enqueued_at",
        "expires_at",
        "not_before",
        "chain",
        "headers",
        "v",
    }


def test_defaults_of_a_new_envelope() -> None:
    first, second = Envelope(job="j", queue="q"), Envelope(job="j", queue="q")
    assert first.id != second.id
    assert (first.attempt, first.v, first.expires_at, first.not_before) == (1, VERSION, None, None)
    assert decode({"id": "x", "job": "j", "queue": "q"}).attempt == 1


def test_to_dict_does_not_share_the_envelope_itself() -> None:
    envelope = full_envelope()
    data = envelope.to_dict()
    data["job"] = "changed"
    assert envelope.job == "billing.charge"


def test_integer_timestamps_are_read_as_floats() -> None:
    envelope = decode(body(enqueued_at=1_800_000_000, expires_at=1_900_000_000))
    assert isinstance(envelope.enqueued_at, float) and isinstance(envelope.expires_at, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", r"message body is not JSON"),
        (b"\xff\xfe", r"message body is not UTF-8"),
        ('{"id": "a", "job": "j", "queue": "q", "enqueued_at": NaN}', r"not JSON: NaN is not a JSON value"),
        ("[1, 2]", r"envelope must be a JSON object, got list"),
        ('"text"', r"envelope must be a JSON object, got str"),
        ("null", r"envelope must be a JSON object, got NoneType"),
    ],
)
def test_decoder_rejects_what_is_not_a_json_object(raw: str | bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        decode(raw)


def test_decoder_names_missing_fields() -> None:
    with pytest.raises(EnvelopeError, match=r"lacks required fields: id, queue"):
        decode({"job": "j"})


def test_decoder_names_unknown_fields() -> None:
    with pytest.raises(EnvelopeError, match=r"unknown fields: priority, task"):
        decode(body(priority=5, task="x"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", 5),
        ("job", None),
        ("queue", ["q"]),
        ("args", "not a list"),
        ("args", {"a": 1}),
        ("kwargs", [1]),
        ("attempt", "2"),
        ("attempt", 2.0),
        ("attempt", True),
        ("v", True),
        ("enqueued_at", "yesterday"),
        ("enqueued_at", False),
        ("expires_at", "soon"),
        ("not_before", True),
        ("chain", {}),
        ("headers", []),
    ],
)
def test_decoder_rejects_wrong_types_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(EnvelopeError, match=rf"field '{name}' has the wrong type"):
        decode(body(**{name: value}))


def test_decoder_rejects_attempt_zero() -> None:
    with pytest.raises(EnvelopeError, match=r"'attempt' must be at least 1"):
        decode(body(attempt=0))


@pytest.mark.parametrize("step", [5, {"args": []}, {"job": 1}, {"job": "a", "args": "x"}, {"job": "a", "extra": 1}])
def test_decoder_rejects_a_malformed_chain_step(step: object) -> None:
    with pytest.raises(EnvelopeError, match=r"'chain' holds a malformed step"):
        decode(body(chain=[step]))


def test_decoder_rejects_a_newer_version_even_with_fields_it_does_not_know() -> None:
    with pytest.raises(EnvelopeError, match=rf"version {VERSION + 1} is newer than this worker understands"):
        decode(body(v=VERSION + 1))
    with pytest.raises(EnvelopeError, match=r"newer than this worker"):
        decode(body(v=VERSION + 1, priority=3))


def test_peeking_into_a_malformed_body() -> None:
    assert peek_job_name('{"job": "a.b", "queue": "emails", "args": 5}') == "a.b"
    assert peek_queue('{"job": "a.b", "queue": "emails", "args": 5}') == "emails"
    assert peek_job_name("garbage") is None
    assert peek_queue("[1]") is None
    assert peek_queue('{"queue": "no spaces or / please"}') is None
    assert peek_job_name('{"job": "app.tasks.make.<locals>.inner"}') == "app.tasks.make.<locals>.inner"


# arguments checked at enqueue


def test_plain_json_arguments_pass() -> None:
    check_json_arguments("j", (1, "s", None, True, 2.5, [1, [2]]), {"d": {"k": [1, {"x": None}]}})


class User:
    pass


@pytest.mark.parametrize(
    ("args", "kwargs", "where", "why"),
    [
        ((), {"tags": {"a", "b"}}, "argument 'tags'", "is not JSON-serializable"),
        ((User(),), {}, "positional argument 0", "is not JSON-serializable.*User"),
        ((1, dt.date(2024, 1, 1)), {}, "positional argument 1", "is not JSON-serializable.*date"),
        ((), {"ratio": math.nan}, "argument 'ratio'", "is not JSON-serializable"),
        ((), {"ratio": math.inf}, "argument 'ratio'", "is not JSON-serializable"),
        ((), {"point": (1, 2)}, "argument 'point'", "does not survive a JSON round trip.*tuple"),
        ((), {"scores": {1: "a"}}, "argument 'scores'", "does not survive a JSON round trip"),
        (([{"nested": (1,)}],), {}, "positional argument 0", "does not survive a JSON round trip"),
        ((b"bytes",), {}, "positional argument 0", "is not JSON-serializable.*bytes"),
    ],
)
@pytest.mark.parametrize("check", [check_json_arguments, json_arguments])
def test_non_json_arguments_fail_naming_the_job_and_argument(
    check: Any, args: tuple[Any, ...], kwargs: dict[str, Any], where: str, why: str
) -> None:
    with pytest.raises(EnqueueError, match=rf"job 'mail\.send': {where} {why}"):
        check("mail.send", args, kwargs)


@pytest.mark.parametrize("check", [check_json_arguments, json_arguments])
def test_an_argument_that_contains_itself_fails_naming_it(check: Any) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(EnqueueError, match=r"job 'mail\.send': argument 'items' is not JSON-serializable"):
        check("mail.send", (), {"items": loop})


@pytest.mark.parametrize("check", [check_json_arguments, json_arguments])
def test_keyword_names_must_be_strings(check: Any) -> None:
    with pytest.raises(EnqueueError, match=r"job 'mail\.send': keyword argument names must be strings, got 1"):
        check("mail.send", (), {1: "x"})


# batches: envelopes rendered from one template


def batch_of(
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]], *, at_once: bool = False, **fields: Any
) -> EnvelopeBatch:
    options: dict[str, Any] = {"enqueued_at": 1_800_000_000.25, "expires_at": None, "not_before": None, "headers": {}}
    batch = EnvelopeBatch("billing.charge", "payments", **{**options, **fields})
    texts = [json_arguments("billing.charge", args, kwargs) for args, kwargs in calls]
    if at_once:
        batch.extend([a for a, _ in calls], [k for _, k in calls], [a for a, _ in texts], [k for _, k in texts])
        return batch
    for (args, kwargs), (args_text, kwargs_text) in zip(calls, texts, strict=True):
        batch.add(args, kwargs, args_text, kwargs_text)
    return batch


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1, "zürich ✓", None, [1.5, {"x": True}]), {}),
    (('a "quoted" \\ back\tslash',), {"p": "c:\\dir\n"}),
    ((), {"user_id": 42, "meta": {"k": [1, 2]}, "quote": 'say "hi"\n'}),
    ((7,), {"b": 8}),
]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"expires_at": 1_800_000_600.5, "not_before": 1_800_000_060.0},
        {"headers": {"track": {"keep": 3600.0, "results": True}}},
    ],
)
@pytest.mark.parametrize("at_once", [False, True], ids=["add", "extend"])
def test_a_batch_renders_each_envelope_as_it_encodes_itself(fields: dict[str, Any], at_once: bool) -> None:
    batch = batch_of(CALLS, at_once=at_once, **fields)
    assert len(batch) == len(CALLS)
    assert batch.texts == [envelope.encode() for envelope in batch] == envelope_texts(batch)
    assert batch.quoted_texts() == [json.dumps(text) for text in batch.texts]
    assert batch.wrapped_texts("[[", "]") == [f"[[{text}]" for text in batch.texts]
    assert [decode(text) for text in batch.texts] == list(batch)
    assert [(e.args, e.kwargs) for e in batch] == [(list(args), kwargs) for args, kwargs in CALLS]
    assert len(set(batch.ids)) == len(CALLS) and all(len(i) == 32 for i in batch.ids)


def test_a_batch_due_later_keeps_its_envelopes_and_ids() -> None:
    batch = batch_of(CALLS)
    later = batch.with_not_before(1_800_000_100.0)
    assert [e.not_before for e in later] == [1_800_000_100.0] * len(CALLS)
    assert later.ids == batch.ids
    assert later.texts == [e.encode() for e in later]
    assert later.quoted_texts() == [json.dumps(text) for text in later.texts]
    assert batch.texts == [e.encode() for e in batch], "the batch itself is unchanged"
    assert batch[1:3] == list(batch)[1:3]


def test_a_batch_keeps_the_arguments_as_they_were_added() -> None:
    batch = EnvelopeBatch("billing.charge", "payments", enqueued_at=1.0, expires_at=None, not_before=None, headers={})
    kwargs: dict[str, Any] = {"n": 1}
    batch.add((), kwargs, *json_arguments("billing.charge", (), kwargs))
    kwargs["n"] = 2  # a generator reusing one dict between items
    assert batch[0].kwargs == {"n": 1} == decode(batch.texts[0]).kwargs


_SCALAR = st.one_of(
    st.integers(), st.booleans(), st.none(), st.text(), st.floats(allow_nan=False, allow_infinity=False)
)


@given(st.lists(st.tuples(st.integers()), max_size=5) | st.lists(st.lists(_SCALAR, max_size=3).map(tuple), max_size=5))
def test_calls_of_scalars_encode_together_as_each_alone(calls: list[tuple[Any, ...]]) -> None:
    assert scalar_args_texts(calls) == [json.dumps(list(call), separators=(",", ":")) for call in calls]


def test_calls_that_are_not_tuples_of_scalars_are_left_to_the_one_by_one_path() -> None:
    assert scalar_args_texts([(1,), [2]]) is None
    assert scalar_args_texts([(1, {"a": 1})]) is None
    assert scalar_args_texts([(float("nan"),)]) is None
