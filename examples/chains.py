"""A chain that passes results (extract, transform, load): python examples/chains.py

Runs on the embedded engine with no configuration; set TASKBRIDGE_ENGINE and TASKBRIDGE_BROKER_URL
and run `taskbridge worker examples.chains` to run the same chain on Celery or Dramatiq.
"""

from __future__ import annotations

from typing import Any

from taskbridge import get_engine, job
from taskbridge.compat import chain


@job
def download(account_id: int) -> dict[str, Any]:
    """Extract: returns plain JSON, which the next step receives first."""
    return {"account": account_id, "rows": [3, 1, 2]}


@job
def process(data: dict[str, Any], kind: str = "slow") -> dict[str, Any]:
    """Transform: the previous result, then its own arguments."""
    rows = sorted(data["rows"]) if kind == "fast" else data["rows"]
    return {"account": data["account"], "total": sum(rows), "rows": rows}


@job
def store(result: dict[str, Any]) -> None:
    """Load."""
    print(f"stored account {result['account']}: total {result['total']}, rows {result['rows']}")


@job
def announce(text: str) -> None:
    """A step made with .si(): it does not receive the previous result."""
    print(text)


if __name__ == "__main__":
    chain(download.s(42), process.s(kind="fast"), store.s(), announce.si("chain finished")).enqueue()
    download.s(7).then(process.s()).then(store.s()).enqueue()  # the same with .then
    get_engine().join(timeout=30)
