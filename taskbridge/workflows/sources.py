"""Fan-out sources, all carried as JSON: integer id ranges, date and datetime ranges, and cursor functions.

A source reads one chunk at a time from a position (a chunk number, or a cursor function's own
``after`` value), so a dispatcher never holds more than one chunk, whatever the source's size.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from ..errors import EnqueueError
from ..units import Duration, parse_duration

Source = dict[str, Any]
"""A source as it travels in the dispatcher's arguments: ``{"kind": ..., ...}``."""

CursorFunction = Callable[[Any, int], tuple[Sequence[Any], Any]]
"""``func(after, limit) -> (items, next_after)``: up to ``limit`` items after ``after`` (None at
first); ``next_after`` None when there are no more. Items and ``after`` values are plain JSON."""


def ids(first: int, last: int) -> Source:
    """Every integer from ``first`` to ``last``, both included. Ids may be sparse: each job gets
    one number of the range and decides whether it exists."""
    if isinstance(first, bool) or isinstance(last, bool) or not isinstance(first, int) or not isinstance(last, int):
        raise EnqueueError(f"ids({first!r}, {last!r}): the bounds must be integers")
    if last < first:
        raise EnqueueError(f"ids({first}, {last}): the last id is before the first")
    return {"kind": "ids", "first": first, "last": last}


def dates(start: dt.date, stop: dt.date, step: Duration | dt.timedelta = "1d") -> Source:
    """From ``start`` to ``stop`` (included) every ``step``: dates as ``YYYY-MM-DD`` strings, or
    datetimes, which must carry a time zone, as ISO 8601 strings in that zone."""
    seconds = step.total_seconds() if isinstance(step, dt.timedelta) else parse_duration(step, what="step")
    if seconds <= 0:
        raise EnqueueError(f"dates(...): step must be positive, got {step!r}")
    if isinstance(start, dt.datetime) != isinstance(stop, dt.datetime):
        raise EnqueueError("dates(...): start and stop must both be dates or both be datetimes")
    if isinstance(start, dt.datetime) and isinstance(stop, dt.datetime):
        if start.tzinfo is None or stop.tzinfo is None:
            raise EnqueueError("dates(...): datetimes must carry a time zone (e.g. tzinfo=ZoneInfo('Europe/Zurich'))")
        zone = start.tzinfo.key if isinstance(start.tzinfo, ZoneInfo) else None
        source: Source = {"kind": "datetimes", "start": start.isoformat(), "stop": stop.isoformat(), "zone": zone}
    else:
        if seconds % 86400:
            raise EnqueueError(f"dates(...): a step between dates must be whole days, got {step!r}")
        source = {"kind": "dates", "start": start.isoformat(), "stop": stop.isoformat()}
    if stop < start:
        raise EnqueueError(f"dates(...): stop {stop} is before start {start}")
    return {**source, "step": seconds}


def cursor(func: CursorFunction | str) -> Source:
    """Keyset pagination by a module-level function ``func(after, limit) -> (items, next_after)``
    (or its ``"module:name"``), which every worker running the dispatcher can import."""
    path = func if isinstance(func, str) else f"{func.__module__}:{func.__qualname__}"
    if "<" in path or ":" not in path:
        raise EnqueueError(f"cursor({path!r}): pass a module-level function or 'module:name'")
    _function(path)
    return {"kind": "cursor", "func": path}


def total_chunks(source: Source, size: int) -> int | None:
    """How many chunks of ``size`` the source has; None for a cursor function (not known ahead)."""
    count = _count(source)
    return None if count is None else math.ceil(count / size)


def read_chunk(source: Source, number: int, after: Any, size: int) -> tuple[list[Any], Any, bool]:
    """Chunk ``number`` (from 0): its items, the cursor after it, and whether it is the last."""
    kind = source["kind"]
    if kind == "cursor":
        items, following = _function(source["func"])(after, size)
        return list(items), following, following is None
    count = _count(source)
    assert count is not None
    begin, end = number * size, min(count, (number + 1) * size)
    if kind == "ids":
        chosen: list[Any] = list(range(source["first"] + begin, source["first"] + end))
    else:
        chosen = [_moment(source, index) for index in range(begin, end)]
    return chosen, None, end >= count


def _count(source: Source) -> int | None:
    kind = source["kind"]
    if kind == "ids":
        return int(source["last"]) - int(source["first"]) + 1
    if kind in ("dates", "datetimes"):
        span = _parse(source, source["stop"]) - _parse(source, source["start"])
        return int(span.total_seconds() // source["step"]) + 1
    if kind == "cursor":
        return None
    raise EnqueueError(f"unknown fan-out source kind {kind!r}")


def _parse(source: Source, text: str) -> dt.datetime:
    if source["kind"] == "dates":
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(text)


def _moment(source: Source, index: int) -> str:
    start = _parse(source, source["start"])
    moment = start.astimezone(dt.timezone.utc) + dt.timedelta(seconds=source["step"] * index)
    if source["kind"] == "dates":
        return moment.date().isoformat()
    zone = ZoneInfo(source["zone"]) if source.get("zone") else start.tzinfo
    return moment.astimezone(zone).isoformat()


def _function(path: str) -> CursorFunction:
    module, _, name = path.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise EnqueueError(f"cursor function {path!r} cannot be imported: {exc}") from None
    if not callable(found):
        raise EnqueueError(f"cursor function {path!r} is not callable")
    return found  # type: ignore[no-any-return]
