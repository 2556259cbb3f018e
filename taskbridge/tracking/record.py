"""A job's record: its state, attempts, times, last error and result, as tracking stores keep it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["queued", "scheduled", "running", "done", "failed", "dead", "expired", "cancelled", "unknown"]

STATES: tuple[State, ...] = (
    "queued",
    "scheduled",
    "running",
    "done",
    "failed",
    "dead",
    "expired",
    "cancelled",
    "unknown",
)
FINISHED: frozenset[str] = frozenset({"done", "dead", "expired", "cancelled"})
"""States a job never leaves."""
CANCELLABLE: frozenset[str] = frozenset({"queued", "scheduled", "failed"})
"""States of a job that is not running now: ``cancel()`` stops it from running (again)."""

Fields = dict[str, str]
"""A record as the stores hold it: every value a string, absent when unset."""


@dataclass(frozen=True)
class JobError:
    """The last failure of a job: the exception's type, its message and the traceback text."""

    type: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True)
class JobRecord:
    """What the tracking store knows of one job (see :meth:`state` for the state as of now)."""

    id: str
    job: str | None
    queue: str | None
    stored_state: str
    attempts: int
    enqueued_at: float | None
    not_before: float | None
    expires_at: float | None
    started_at: float | None
    finished_at: float | None
    error: JobError | None
    result_json: str | None
    keeps_result: bool
    reason: str | None

    @classmethod
    def from_fields(cls, job_id: str, fields: Fields) -> JobRecord:
        error = None
        if "error_type" in fields:
            error = JobError(fields["error_type"], fields.get("error", ""), fields.get("traceback"))
        return cls(
            id=job_id,
            job=fields.get("job"),
            queue=fields.get("queue"),
            stored_state=fields.get("state", "unknown"),
            attempts=int(fields.get("attempts", "0")),
            enqueued_at=_float(fields.get("enqueued_at")),
            not_before=_float(fields.get("not_before")),
            expires_at=_float(fields.get("expires_at")),
            started_at=_float(fields.get("started_at")),
            finished_at=_float(fields.get("finished_at")),
            error=error,
            result_json=fields.get("result"),
            keeps_result=fields.get("keeps_result") == "1",
            reason=fields.get("reason"),
        )

    def state(self, now: float | None = None) -> State:
        """The state as of ``now``: a job whose countdown has passed is ``queued``, and one still
        waiting after its expiry is ``expired`` (a worker will drop it, never run it)."""
        now = time.time() if now is None else now
        state = self.stored_state
        if state in ("queued", "scheduled"):
            if self.expires_at is not None and now > self.expires_at:
                return "expired"
            if state == "scheduled" and (self.not_before is None or now >= self.not_before):
                return "queued"
        return state if state in STATES else "unknown"  # type: ignore[return-value]

    @property
    def result(self) -> Any:
        """The return value (None when the job returned nothing or keeps no result)."""
        return None if self.result_json is None else json.loads(self.result_json)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON, for ``taskbridge job --json``."""
        return {
            "id": self.id,
            "job": self.job,
            "queue": self.queue,
            "state": self.state(),
            "attempts": self.attempts,
            "enqueued_at": self.enqueued_at,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message, "traceback": self.error.traceback},
            "result": self.result,
            "keeps_result": self.keeps_result,
            "reason": self.reason,
        }


def _float(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value)
