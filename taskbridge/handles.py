"""Job handles: ``JobRef`` answers "did job X run, and what did it return?" from any process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .config import Settings, get_settings
from .envelope import Envelope
from .errors import (
    CoordinationError,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotCancellable,
    ResultTimeout,
    ResultUnavailable,
)
from .tracking import CANCELLABLE, JobError, JobRecord, State, Tracker, get_tracker

LONGEST_WAIT = 60.0
"""Longest single wait of ``result()`` before it reads the record again."""
ASYNC_STEP = 5.0
"""``aresult()`` waits in a worker thread in steps this long, so a cancelled await frees it soon."""

_UNTRACKED = "tracking is off for it (declare the job with result_ttl=, or set track_jobs) or its record expired"


class JobRef:
    """A handle on one job, returned by ``enqueue`` or rebuilt with :func:`get_job`.

    ``status()`` and ``result()`` read the job's record afresh; ``attempts``, ``started_at``,
    ``finished_at`` and ``error`` show the record as last read (read on first use), and
    :meth:`refresh` reads it again. Jobs are tracked when they keep results (``result_ttl=``) or
    the ``track_jobs`` setting is on; otherwise the status is ``unknown``.

    A ref from ``enqueue`` also carries the published envelope (``ref.envelope``); its fields
    (``ref.queue``, ``ref.attempt``, ``ref.expires_at``, ...) read through, as before refs existed.
    """

    def __init__(self, job_id: str, envelope: Envelope | None = None, settings: Settings | None = None) -> None:
        self.id = job_id
        self.envelope = envelope
        self._settings = settings
        self._record: JobRecord | None = None
        self._read = False

    def __repr__(self) -> str:
        name = self.envelope.job if self.envelope is not None else (self._record.job if self._record else "?")
        return f"<JobRef {name} {self.id}>"

    def __getattr__(self, name: str) -> Any:
        envelope = self.__dict__.get("envelope")
        if name.startswith("_") or envelope is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(envelope, name)

    @property
    def job(self) -> str | None:
        """The job's name."""
        if self.envelope is not None:
            return self.envelope.job
        record = self._current()
        return record.job if record else None

    @property
    def queue(self) -> str | None:
        """The queue the job was sent to."""
        if self.envelope is not None:
            return self.envelope.queue
        record = self._current()
        return record.queue if record else None

    def refresh(self) -> JobRecord | None:
        """Read the job's record again; None when there is none or the store cannot be reached."""
        try:
            self._record = self._fetch()
        except CoordinationError:
            self._record = None
        self._read = True
        return self._record

    def status(self) -> State:
        """``queued``, ``scheduled``, ``running``, ``done``, ``failed`` (will retry), ``dead``,
        ``expired``, ``cancelled``, or ``unknown`` (not tracked, record expired, store unreachable)."""
        record = self.refresh()
        return record.state() if record is not None else "unknown"

    @property
    def attempts(self) -> int:
        """Attempts started so far (0 while it waits for its first run)."""
        record = self._current()
        return record.attempts if record else 0

    @property
    def started_at(self) -> float | None:
        """When the last attempt started (UNIX time)."""
        record = self._current()
        return record.started_at if record else None

    @property
    def finished_at(self) -> float | None:
        """When the job finished: done, dead, expired or cancelled (UNIX time)."""
        record = self._current()
        return record.finished_at if record else None

    @property
    def error(self) -> JobError | None:
        """Type, message and traceback text of the last failure."""
        record = self._current()
        return record.error if record else None

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value, waiting up to ``timeout`` seconds (None: as long as it takes)
        for it to finish, without polling: the wait blocks on the store.

        Raises :class:`JobFailed` (dead), :class:`JobExpired`, :class:`JobCancelled`,
        :class:`ResultTimeout`, or :class:`ResultUnavailable` when the job keeps no result, has no
        record, or the store cannot be reached.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        store = self._tracker().store
        while True:
            record = self._must_read()
            state = record.state()
            if state == "done":
                return record.result
            self._raise_if_finished(record, state)
            wait = LONGEST_WAIT if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise ResultTimeout(f"job {record.job!r} ({self.id}) is still {state} after {timeout:g}s")
            if record.expires_at is not None and state in ("queued", "scheduled"):
                wait = min(wait, max(0.01, record.expires_at - time.time()))
            try:
                store.wait(self.id, min(wait, LONGEST_WAIT))
            except CoordinationError as exc:
                raise ResultUnavailable(f"job {self.id}: cannot wait for its result: {exc}") from exc

    async def aresult(self, timeout: float | None = None) -> Any:
        """:meth:`result` for async code: waits in a worker thread, never blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = ASYNC_STEP if deadline is None else min(ASYNC_STEP, deadline - time.monotonic())
            try:
                return await asyncio.to_thread(self.result, max(remaining, 0.0))
            except ResultTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ResultTimeout(f"job {self.id} has not finished after {timeout:g}s") from None

    def cancel(self) -> None:
        """Cancel the job if it has not started (or waits for a retry): it will not run, and its
        status becomes ``cancelled``. Cancelling a cancelled job does nothing.

        Raises :class:`JobNotCancellable` if it is running (taskbridge does not stop a running job)
        or finished, or has no record; :class:`~taskbridge.errors.CoordinationError` if the store
        cannot be reached.
        """
        state = self._tracker().store.cancel(self.id, time.time())
        self._read = False
        if state is None:
            raise JobNotCancellable(f"job {self.id} cannot be cancelled: there is no record of it; {_UNTRACKED}")
        if state == "running":
            raise JobNotCancellable(
                f"job {self.id} is running and cannot be cancelled: taskbridge stops jobs only before they start"
            )
        if state not in CANCELLABLE and state != "cancelled":
            raise JobNotCancellable(f"job {self.id} cannot be cancelled: it already finished ({state})")

    def _tracker(self) -> Tracker:
        return get_tracker(self._settings or get_settings())

    def _fetch(self) -> JobRecord | None:
        fields = self._tracker().store.read(self.id)
        return None if fields is None else JobRecord.from_fields(self.id, fields)

    def _current(self) -> JobRecord | None:
        return self._record if self._read else self.refresh()

    def _must_read(self) -> JobRecord:
        try:
            record = self._fetch()
        except CoordinationError as exc:
            raise ResultUnavailable(f"job {self.id}: its record cannot be read: {exc}") from exc
        self._record, self._read = record, True
        if record is None:
            raise ResultUnavailable(f"job {self.id} has no record: {_UNTRACKED}")
        if not record.keeps_result:
            raise ResultUnavailable(
                f"job {record.job!r} ({self.id}) keeps no result: declare it with result_ttl= or set result_ttl"
            )
        return record

    def _raise_if_finished(self, record: JobRecord, state: str) -> None:
        name = f"job {record.job!r} ({self.id})"
        if state == "dead":
            error = record.error or JobError("Dead", "unknown reason")
            raise JobFailed(f"{name} failed: {error}", error.type, error.message, error.traceback)
        if state == "expired":
            raise JobExpired(f"{name} expired before it ran")
        if state == "cancelled":
            why = f" ({record.reason})" if record.reason else ""
            raise JobCancelled(f"{name} was cancelled{why}")


def get_job(job_id: str) -> JobRef:
    """A handle on the job ``job_id`` (from ``ref.id``), in any process that shares the store."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"get_job needs a job id (ref.id), got {job_id!r}")
    return JobRef(job_id)
