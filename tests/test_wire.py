"""Reading raw queue items: the envelope inside any engine's wrapper, or a reason; never an exception."""

from __future__ import annotations

import base64
import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskbridge import Envelope
from taskbridge.wire import readable_body, unwrap

ENVELOPE = Envelope(job="app.send", queue="emails", args=[1]).encode()


def _kombu(body: bytes, content_type: str = "application/json") -> bytes:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {"task": "app.send"},
            "properties": {"body_encoding": "base64", "delivery_info": {"routing_key": "emails"}},
        }
    ).encode()


def _dramatiq(args: object, **fields: object) -> bytes:
    message = {
        "queue_name": "emails",
        "actor_name": "app.send",
        "args": args,
        "kwargs": {},
        "options": {},
        "message_id": "m1",
        "message_timestamp": 1,
        **fields,
    }
    return json.dumps(message).encode()


def test_a_bare_envelope_is_read_as_is() -> None:
    found = unwrap(ENVELOPE.encode())
    assert (found.envelope, found.form) == (ENVELOPE, "envelope")


def test_the_envelope_inside_a_celery_body_on_amqp() -> None:
    body = ("[[" + json.dumps(ENVELOPE) + '],{},{"callbacks":null}]').encode()
    assert unwrap(body, content_type="application/json").envelope == ENVELOPE


def test_the_envelope_inside_a_kombu_message_on_redis_or_sqs() -> None:
    celery_body = ("[[" + json.dumps(ENVELOPE) + "],{},{}]").encode()
    found = unwrap(_kombu(celery_body))
    assert (found.envelope, found.form) == (json.dumps(json.loads(ENVELOPE), separators=(",", ":")), "kombu")


def test_the_envelope_inside_a_dramatiq_message_plain_and_base64() -> None:
    plain = _dramatiq([ENVELOPE])
    assert unwrap(plain).envelope == ENVELOPE
    assert unwrap(base64.b64encode(plain)).envelope == ENVELOPE


def test_pickle_is_refused_by_content_type_without_being_read() -> None:
    payload = pickle.dumps({"x": 1})
    assert "pickle" in (unwrap(payload, content_type="application/x-python-serialize").reason or "")
    assert "pickle" in (unwrap(_kombu(payload, "application/x-python-serialize")).reason or "")


def test_engine_shaped_messages_with_null_fields_are_refused_with_a_reason() -> None:
    assert "options" in (unwrap(_dramatiq([ENVELOPE], options=None)).reason or "")
    assert "args" in (unwrap(_dramatiq(None)).reason or "")
    assert unwrap(b'{"body": null, "properties": null}').envelope is None


def test_bare_json_values_are_not_messages() -> None:
    for body in (b'"hello"', b"42", b"[1, 2, 3]", b"null", b"true", b"", b"   "):
        found = unwrap(body)
        assert found.envelope is None and found.reason, body


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_an_envelope_or_a_reason(body: bytes) -> None:
    found = unwrap(body)
    assert (found.envelope is None) != (found.reason is None)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSON, st.sampled_from(["plain", "dramatiq", "kombu", "celery"]))
def test_any_json_in_any_wrapper_gives_an_envelope_or_a_reason(value: object, wrapper: str) -> None:
    text = json.dumps(value).encode()
    body = {
        "plain": text,
        "dramatiq": _dramatiq([value]),
        "kombu": _kombu(text),
        "celery": json.dumps([[value], {}, {}]).encode(),
    }[wrapper]
    found = unwrap(body)
    assert (found.envelope is None) != (found.reason is None)
    if found.envelope is not None:
        assert isinstance(found.envelope, str)  # validated later, by envelope.decode


def test_dead_letter_bodies_keep_bytes_that_are_not_utf8_as_base64() -> None:
    assert readable_body(b"plain") == ("plain", None)
    text, encoding = readable_body(b"\xff\x00")
    assert encoding == "base64" and base64.b64decode(text) == b"\xff\x00"


def test_a_kombu_message_base64_encoded_whole_as_plain_celery_writes_it_to_sqs() -> None:
    celery_body = ("[[" + json.dumps(ENVELOPE) + "],{},{}]").encode()
    found = unwrap(base64.b64encode(_kombu(celery_body)))
    assert (found.envelope, found.form) == (ENVELOPE, "kombu")


def test_an_item_the_celery_engine_wrapped_with_its_bytes_is_read_as_those_bytes() -> None:
    wrapper = json.dumps(
        {
            "body": base64.b64encode(ENVELOPE.encode()).decode(),
            "content-type": "application/octet-stream",
            "headers": {"x-taskbridge-item": True},
            "properties": {"body_encoding": "base64"},
        }
    )
    assert unwrap(wrapper).envelope == ENVELOPE
    garbage = json.dumps({**json.loads(wrapper), "body": base64.b64encode(b"\xff\x00").decode()})
    assert unwrap(garbage).reason and "UTF-8" in (unwrap(garbage).reason or "")


@pytest.mark.parametrize("method", ["gzip", "zlib", "bzip2", "lzma"])
def test_a_body_compressed_by_celerys_task_compression_is_read_on_every_transport(method: str) -> None:
    from kombu.compression import compress

    body = json.dumps([[ENVELOPE], {}, {}]).encode()
    squeezed, kind = compress(body, method)
    amqp = unwrap(squeezed, content_type="application/json", headers={"compression": kind})
    assert amqp.envelope is not None and json.loads(amqp.envelope) == json.loads(ENVELOPE)
    item = {
        "body": base64.b64encode(squeezed).decode(),
        "content-type": "application/json",
        "headers": {"compression": kind},
        "properties": {"body_encoding": "base64"},
    }
    on_redis = unwrap(json.dumps(item).encode())
    assert on_redis.envelope is not None and json.loads(on_redis.envelope) == json.loads(ENVELOPE)


def test_a_compressed_body_that_is_not_what_its_header_says_or_too_big_is_refused_with_a_reason() -> None:
    import zlib

    from taskbridge.wire import MAX_DECOMPRESSED

    assert "not valid" in str(unwrap(b"not zlib", headers={"compression": "application/x-gzip"}).reason)
    assert "not supported" in str(unwrap(b"x", headers={"compression": "application/x-brotli"}).reason)
    bomb = zlib.compress(b" " * (MAX_DECOMPRESSED + 1))
    assert "expands to more than" in str(unwrap(bomb, headers={"compression": "application/x-gzip"}).reason)
