"""Signed envelopes: the canonical form, sign and verify, key rotation, and every republish signed."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from support import Embedded, EmbeddedFactory

from taskbridge import Backoff, ConfigurationError, EnqueueError, job
from taskbridge.config import load_settings
from taskbridge.envelope import Envelope, decode
from taskbridge.outcomes import Dead, Defer, Done, Retry
from taskbridge.signing import MISMATCH, MISSING, SIGNATURE_HEADER, Signer, canonical, signer_for

Q = "signing"
KEY = "k1-0123456789abcdef"
OLD_KEY = "k0-fedcba9876543210"
ran: list[Any] = []


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    ran.clear()


@job(name="signing.record", queue=Q)
def record(value: Any = None) -> None:
    ran.append(value)


@job(name="signing.flaky", queue=Q, retry=Backoff(max_retries=1, base=0.05, jitter=False, on=(OSError,)))
def flaky() -> None:
    ran.append("flaky")
    raise ConnectionError("flaky")


def _envelope(**changes: Any) -> Envelope:
    base = Envelope(
        job=record.name,
        queue=Q,
        args=[1, "two", {"three": 3.0}],
        kwargs={"b": 1, "a": [None, True]},
        expires_at=time.time() + 60,
        not_before=time.time() + 5,
        chain=[{"job": record.name, "args": ["next"], "kwargs": {}}],
        headers={"unique": "u:1"},
    )
    return base.with_changes(**changes)


@pytest.fixture
def signed_tb(make_embedded: EmbeddedFactory) -> Embedded:
    return make_embedded(signing_key=KEY)


# the canonical form


def test_the_canonical_form_does_not_depend_on_the_producers_field_order() -> None:
    envelope = _envelope()
    fields = envelope.to_dict()
    fields["kwargs"] = dict(reversed(fields["kwargs"].items()))
    reordered = json.dumps({name: fields[name] for name in reversed(fields)}, indent=2)
    assert canonical(decode(reordered)) == canonical(envelope)
    kwargs_swapped = envelope.with_changes(kwargs={"a": [None, True], "b": 1})
    assert canonical(kwargs_swapped) == canonical(envelope)


def test_a_whole_number_timestamp_signs_as_the_float_the_worker_decodes() -> None:
    envelope = _envelope(enqueued_at=1700000000)
    assert canonical(decode(envelope.encode())) == canonical(envelope)


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "other"},
        {"job": "signing.other"},
        {"args": [1, "two", {"three": 3.5}]},
        {"kwargs": {"b": 2, "a": [None, True]}},
        {"queue": "elsewhere"},
        {"attempt": 2},
        {"enqueued_at": 1.0},
        {"expires_at": None},
        {"not_before": None},
        {"chain": []},
        {"headers": {"unique": "u:2"}},
        {"v": 0},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_the_signature_covers_every_field(changes: dict[str, Any]) -> None:
    signer = Signer(KEY)
    signed = signer.sign(_envelope())
    if "headers" in changes:
        changes = {"headers": {**changes["headers"], SIGNATURE_HEADER: signed.headers[SIGNATURE_HEADER]}}
    tampered = signed.with_changes(**changes)
    assert signer.verify(signed) is None
    assert signer.verify(tampered) == MISMATCH


# sign and verify


def test_a_signed_envelope_verifies_after_the_wire_round_trip() -> None:
    signer = Signer(KEY)
    signed = signer.sign(_envelope())
    assert signed.headers[SIGNATURE_HEADER].startswith("hmac-sha256:")
    assert signer.verify(decode(signed.encode())) is None


def test_signing_again_replaces_the_signature() -> None:
    signer = Signer(KEY)
    once = signer.sign(_envelope())
    twice = signer.sign(once.with_changes(attempt=2))
    assert signer.verify(twice) is None
    assert twice.headers[SIGNATURE_HEADER] != once.headers[SIGNATURE_HEADER]


def test_an_unsigned_envelope_is_reported_as_missing_its_signature() -> None:
    assert Signer(KEY).verify(_envelope()) == MISSING


@pytest.mark.parametrize("value", ["", "hmac-sha256:", "hmac-sha256:zz", "md5:abc", "hmac-sha256:é", 42, None, []])
def test_a_malformed_signature_does_not_match(value: Any) -> None:
    envelope = _envelope(headers={"unique": "u:1", SIGNATURE_HEADER: value})
    expected = MISSING if value is None else MISMATCH
    assert Signer(KEY).verify(envelope) == expected


def test_another_key_does_not_verify() -> None:
    signed = Signer(OLD_KEY).sign(_envelope())
    assert Signer(KEY).verify(signed) == MISMATCH


# rotation


def test_rotation_a_worker_accepts_the_new_key_and_the_older_ones_it_lists() -> None:
    worker = Signer(KEY, accepted=[OLD_KEY])
    assert worker.verify(Signer(KEY).sign(_envelope())) is None
    assert worker.verify(Signer(OLD_KEY).sign(_envelope())) is None
    assert worker.verify(Signer("k9-another-key-entirely").sign(_envelope())) == MISMATCH


def test_rotation_a_worker_signs_only_with_its_own_key() -> None:
    worker = Signer(KEY, accepted=[OLD_KEY])
    assert Signer(KEY).verify(worker.sign(_envelope())) is None
    assert Signer(OLD_KEY).verify(worker.sign(_envelope())) == MISMATCH


# settings


def test_the_key_is_never_shown(clean_env: None) -> None:
    settings = load_settings(signing_key=KEY, signing_keys_accepted=[OLD_KEY])
    shown = f"{settings!r} {settings} {signer_for(settings)!r}"
    assert KEY not in shown and OLD_KEY not in shown
    with pytest.raises(ConfigurationError) as failed:
        load_settings(signing_key="short-secret")
    assert "signing_key (TASKBRIDGE_SIGNING_KEY): " in str(failed.value)
    assert "at least 16 characters" in str(failed.value) and "short-secret" not in str(failed.value)


@pytest.mark.parametrize("given", [f"{OLD_KEY}, k2-0123456789abcdef", f'["{OLD_KEY}", "k2-0123456789abcdef"]'])
def test_accepted_keys_come_from_the_environment_comma_separated_or_as_json(
    given: str, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKBRIDGE_SIGNING_KEY", KEY)
    monkeypatch.setenv("TASKBRIDGE_SIGNING_KEYS_ACCEPTED", given)
    settings = load_settings()
    accepted = [key.get_secret_value() for key in settings.signing_keys_accepted]
    assert accepted == [OLD_KEY, "k2-0123456789abcdef"]


def test_taskbridge_config_shows_that_keys_are_set_never_the_keys(clean_env: None) -> None:
    from taskbridge.cli.config import describe_settings

    shown = describe_settings(load_settings(signing_key=KEY, signing_keys_accepted=[OLD_KEY]))
    assert KEY not in shown and OLD_KEY not in shown
    assert re.search(r"^signing_keys_accepted +\(1 key\)", shown, re.MULTILINE), shown


def test_accepted_keys_without_a_signing_key_are_refused(clean_env: None) -> None:
    with pytest.raises(ConfigurationError, match="needs TASKBRIDGE_SIGNING_KEY"):
        load_settings(signing_keys_accepted=[OLD_KEY])


def test_without_a_key_nothing_is_signed(clean_env: None) -> None:
    assert signer_for(load_settings()) is None


# the producer and the runner


def _verifies(envelope: Envelope) -> bool:
    return Signer(KEY).verify(envelope) is None


def test_enqueue_signs_the_envelope(signed_tb: Embedded) -> None:
    record.enqueue("hello")
    record.enqueue_many([("a",), ("b",)])
    queued = signed_tb.queued(Q)
    assert len(queued) == 3 and all(_verifies(envelope) for envelope in queued)


def test_a_signed_envelope_runs(signed_tb: Embedded) -> None:
    record.enqueue("hello")
    [body] = signed_tb.engine.messages(Q)
    assert isinstance(signed_tb.runner.run(body, Q), Done)
    assert ran == ["hello"]


def test_an_unsigned_envelope_is_dead_lettered_without_running(signed_tb: Embedded) -> None:
    body = Envelope(job=record.name, queue=Q, args=["unsigned"]).encode()
    outcome = signed_tb.runner.run(body, Q)
    assert isinstance(outcome, Dead) and outcome.reason == MISSING
    assert ran == []
    [letter] = signed_tb.dead_letters(Q)
    assert letter.headers["reason"] == MISSING and letter.headers["body"] == body
    assert letter.headers["job"] == record.name
    assert _verifies(letter), "the dead-letter record is signed by the worker"


def test_a_tampered_argument_is_dead_lettered_without_running(signed_tb: Embedded) -> None:
    signed = Signer(KEY).sign(Envelope(job=record.name, queue=Q, args=["pay 10"]))
    tampered = signed.encode().replace("pay 10", "pay 99")
    outcome = signed_tb.runner.run(tampered, Q)
    assert isinstance(outcome, Dead) and outcome.reason == MISMATCH
    assert ran == []
    [letter] = signed_tb.dead_letters(Q)
    assert letter.headers["reason"] == MISMATCH and letter.headers["body"] == tampered


def test_an_unsigned_envelope_goes_to_the_dead_letters_of_the_queue_it_was_read_from(signed_tb: Embedded) -> None:
    body = Envelope(job=record.name, queue="elsewhere").encode()
    signed_tb.runner.run(body, Q)
    assert len(signed_tb.dead_letters(Q)) == 1 and signed_tb.dead_letters("elsewhere") == []


def test_a_worker_without_a_key_runs_signed_envelopes(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded()
    signed = Signer(KEY).sign(Envelope(job=record.name, queue=Q, args=["signed"]))
    assert isinstance(tb.runner.run(signed.encode(), Q), Done)
    assert ran == ["signed"]


def test_a_retry_is_signed(signed_tb: Embedded) -> None:
    first = Signer(KEY).sign(Envelope(job=flaky.name, queue=Q))
    assert isinstance(signed_tb.runner.run(first.encode(), Q), Retry)
    [again] = signed_tb.queued(Q)
    assert again.attempt == 2 and _verifies(again)


def test_a_delay_hop_is_signed(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(signing_key=KEY, inline_wait_max=0.1)
    early = Signer(KEY).sign(Envelope(job=record.name, queue=Q, not_before=time.time() + 30))
    assert isinstance(tb.runner.run(early.encode(), Q), Defer)
    [again] = tb.queued(Q)
    assert again.id == early.id and _verifies(again)


def test_a_chain_step_is_signed(signed_tb: Embedded) -> None:
    first = Signer(KEY).sign(
        Envelope(job=record.name, queue=Q, args=["first"], chain=[{"job": record.name, "args": ["second"]}])
    )
    assert isinstance(signed_tb.runner.run(first.encode(), Q), Done)
    [step] = signed_tb.queued(Q)
    assert step.args == ["second"] and _verifies(step)
    assert isinstance(signed_tb.runner.run(step.encode(), Q), Done)
    assert ran == ["first", "second"]


def test_a_job_out_of_retries_is_dead_lettered_with_a_signed_record(signed_tb: Embedded) -> None:
    last = Signer(KEY).sign(Envelope(job=flaky.name, queue=Q, attempt=2))
    assert isinstance(signed_tb.runner.run(last.encode(), Q), Dead)
    [letter] = signed_tb.dead_letters(Q)
    assert letter.headers["reason"].startswith("failed on attempt 2") and _verifies(letter)


def test_an_unsigned_message_whose_worker_was_lost_is_dead_lettered_not_retried(signed_tb: Embedded) -> None:
    body = Envelope(job=flaky.name, queue=Q).encode()
    outcome = signed_tb.runner.fail_killed(body, "worker lost", queue=Q)
    assert isinstance(outcome, Dead) and outcome.reason == MISSING
    assert signed_tb.queued(Q) == [], "a retry would carry a valid signature for a message nobody signed"


def test_the_size_limit_at_enqueue_leaves_room_for_the_signature(signed_tb: Embedded) -> None:
    limit = signed_tb.engine.facts.max_message_size
    frame = len(Envelope(job=record.name, queue=Q, args=[""]).encode())
    fits_unsigned = "x" * (limit - frame - 60)
    with pytest.raises(EnqueueError, match="over the"):
        record.enqueue(fits_unsigned)
    record.enqueue("x" * (limit - frame - 200))
    [queued] = signed_tb.engine.messages(Q)
    assert len(queued) <= limit
