"""Chunked fan-out without a task flood: python examples/fan_out.py

A dispatcher walks the source 500 items at a time and publishes the next chunk only while the
queue holds fewer than 2,000 jobs. Runs on the embedded engine with no configuration; with a
multi-process engine set TASKBRIDGE_COORDINATION_URL=redis://... (the progress record lives there).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from taskbridge import get_engine, job
from taskbridge.workflows import cursor, dates, fan_out, ids, progress

sent: set[int] = set()


@job
def send_report(user_id: int) -> None:
    """Idempotent: sending twice to one user changes nothing. Ids may be sparse: skip missing ones."""
    sent.add(user_id)


@job
def rebuild_hour(hour: str, table: str) -> None:
    """Receives each hour as an ISO 8601 string with its time zone."""
    print(f"rebuild {table} for {hour}")


def customers_after(after: Any, limit: int) -> tuple[list[int], Any]:
    """Keyset pagination, as `SELECT id FROM customers WHERE id > %s ORDER BY id LIMIT %s` would."""
    start = (after or 0) + 1
    page = [i for i in range(start, start + limit) if i <= 1_234]
    return page, (page[-1] if len(page) == limit else None)


if __name__ == "__main__":
    report = fan_out(send_report, ids(1, 5_000), chunk=500, max_depth=2_000)
    zurich = ZoneInfo("Europe/Zurich")
    day = dates(dt.datetime(2026, 3, 29, 0, tzinfo=zurich), dt.datetime(2026, 3, 29, 4, tzinfo=zurich), "1h")
    fan_out(rebuild_hour, day, chunk=2, kwargs={"table": "sales"})
    fan_out(send_report, cursor(customers_after), chunk=200, pause="10ms")
    get_engine().join(timeout=120)
    print(progress(report.id))
    print(f"{len(sent):,} distinct users got a report")
