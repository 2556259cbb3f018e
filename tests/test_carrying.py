"""An outcome whose write fails is stored later, in place: the job body never runs again for it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from support import Embedded

from taskbridge import carrying, job
from taskbridge.envelope import Envelope
from taskbridge.outcomes import Dead

Q = "carrying"
ran: list[str] = []


@job(name="carrying.fatal", queue=Q)
def fatal() -> None:
    ran.append("fatal")
    raise ValueError("bad data")


class _RefusingPublishes:
    """Makes the embedded engine refuse the next ``count`` publishes, as a broker with a conflicting
    queue declaration would."""

    def __init__(self, embedded: Embedded, count: int) -> None:
        self.left = count
        self._publish = embedded.engine.publish
        embedded.engine.publish = self  # type: ignore[method-assign]

    def __call__(self, envelopes: Sequence[Envelope], delay: float = 0) -> None:
        if self.left:
            self.left -= 1
            raise ConnectionError("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'carrying-dead'")
        self._publish(envelopes, delay)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    ran.clear()
    monkeypatch.setattr(carrying, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(carrying, "MAX_BACKOFF", 0.04)


def test_a_dead_letter_that_cannot_be_written_is_retried_without_running_the_job_again(
    embedded: Embedded, caplog: pytest.LogCaptureFixture
) -> None:
    _RefusingPublishes(embedded, count=5)
    envelope = Envelope(job=fatal.name, queue=Q)
    with caplog.at_level(logging.WARNING, logger="taskbridge.carrying"):
        outcome = embedded.runner.run(envelope.encode(), Q)
    assert isinstance(outcome, Dead)
    assert ran == ["fatal"]
    [stored] = embedded.dead_letters(Q)
    assert stored.headers["id"] == envelope.id
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "one clear error, not one per attempt"
    message = errors[0].getMessage()
    assert "'carrying-dead'" in message and "PRECONDITION_FAILED" in message
    assert "does not run again" in message


def test_without_holding_writes_once_and_raises(embedded: Embedded) -> None:
    refusing = _RefusingPublishes(embedded, count=1)
    envelope: Any = Envelope(job=fatal.name, queue=Q)
    with carrying.without_holding(), pytest.raises(ConnectionError):
        embedded.runner.fail_killed(envelope.encode(), "killed", queue=Q)
    assert refusing.left == 0
    assert embedded.dead_letters(Q) == []
