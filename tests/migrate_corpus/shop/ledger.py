"""What the shop's tasks did: kept in this process, and appended to $LEDGER_FILE when it is set."""

import json
import os

CALLS: list[tuple[str, tuple, dict]] = []


def note(task: str, *args: object, **kwargs: object) -> None:
    CALLS.append((task, args, kwargs))
    path = os.environ.get("LEDGER_FILE")
    if path:
        with open(path, "a") as ledger:
            ledger.write(json.dumps([task, args, kwargs]) + "\n")
