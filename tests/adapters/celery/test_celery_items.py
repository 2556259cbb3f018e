"""Redis list items and SQS bodies read for kombu: whatever the bytes, a kombu message routed to the
queue they were read from (no server: kombu's in-memory transport builds the messages)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection
from kombu.utils.json import dumps, loads
from taskbridge_celery.items import ITEM_HEADER, kombu_payload

from taskbridge import Envelope

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=16,
)
_kombu_like = st.fixed_dictionaries(
    {},
    optional={
        "body": _json_values,
        "content-type": _json_values,
        "headers": _json_values,
        "properties": st.one_of(
            _json_values,
            st.fixed_dictionaries(
                {},
                optional={"body_encoding": _json_values, "delivery_info": _json_values, "delivery_tag": _json_values},
            ),
        ),
    },
)
_items = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _kombu_like.map(lambda v: json.dumps(v).encode()),
)


@cache
def _channel() -> Any:
    return Connection("memory://").default_channel


def _message(payload: dict[str, Any]) -> Any:
    # As kombu's Redis QoS stores and restores it: through kombu's JSON.
    channel = _channel()
    return channel.Message(loads(dumps(payload)), channel=channel)


@settings(max_examples=300, deadline=None)
@given(item=_items)
def test_any_item_becomes_a_kombu_message_routed_to_the_queue_it_was_read_from(item: bytes) -> None:
    message = _message(kombu_payload(item, "emails"))
    assert message.delivery_info["routing_key"] == "emails"
    assert message.delivery_tag
    assert isinstance(message.body, str | bytes), "every message has a body to run or dead-letter"
    if ITEM_HEADER in (message.headers or {}):
        assert message.body == item, "a wrapper carries the item's exact bytes"


def test_a_kombu_message_is_kept_as_it_is_but_routed_to_the_queue_it_was_read_from() -> None:
    channel = _channel()
    body = json.dumps([[Envelope(job="app.send", queue="emails").encode()], {}, None])
    sent = channel.prepare_message(body, 0, "application/json", "utf-8", {"task": "app.send", "id": "t1"}, {})
    channel._inplace_augment_message(sent, "", "elsewhere")
    message = _message(kombu_payload(dumps(sent).encode(), "emails"))
    assert ITEM_HEADER not in message.headers
    assert (message.headers["task"], message.content_type) == ("app.send", "application/json")
    assert message.body == body.encode()
    assert message.delivery_info["routing_key"] == "emails"


def test_a_wrapper_read_again_after_a_restore_is_not_wrapped_twice() -> None:
    wrapper = kombu_payload(b"\xff not a message", "emails")
    again = _message(kombu_payload(dumps(wrapper), "emails"))
    assert again.body == b"\xff not a message"
