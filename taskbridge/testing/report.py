"""``taskbridge contract``: runs the suite through pytest and prints a table of cases."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from rich.table import Table


class _Collector:
    """Keeps each case's outcome as pytest reports it."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::")[-1]
        entry = self.results.setdefault(name, {"outcome": "passed", "duration": 0.0, "detail": ""})
        entry["duration"] += report.duration
        if report.failed:
            entry["outcome"] = "failed"
            entry["detail"] = str(report.longrepr).strip().splitlines()[-1][:160] if report.longrepr else ""
        elif report.skipped and entry["outcome"] != "failed":
            entry["outcome"] = "skipped"
            longrepr = report.longrepr
            entry["detail"] = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def run_contract(
    *, engine: str | None, broker: str | None, coordination: str | None, keyword: str | None = None
) -> int:
    """Run the contract on the given (or configured) combination; 0 only if no case failed."""
    args = ["--pyargs", "taskbridge.testing.contract", "-p", "no:cacheprovider", "-q", "--no-header", "-rN"]
    if engine:
        args += ["--taskbridge-engine", engine]
    if broker:
        args += ["--taskbridge-broker", broker]
    if coordination:
        args += ["--taskbridge-coordination", coordination]
    if keyword:
        args += ["-k", keyword]
    collector = _Collector()
    code = pytest.main(args, plugins=[collector])
    console = Console()
    table = Table(title="taskbridge contract")
    table.add_column("case")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    colours = {"passed": "green", "failed": "red", "skipped": "yellow"}
    for name, entry in collector.results.items():
        outcome = entry["outcome"]
        table.add_row(
            name.removeprefix("test_"), f"[{colours[outcome]}]{outcome}", f"{entry['duration']:.1f}", entry["detail"]
        )
    console.print(table)
    passed = sum(1 for e in collector.results.values() if e["outcome"] == "passed")
    failed = sum(1 for e in collector.results.values() if e["outcome"] == "failed")
    skipped = sum(1 for e in collector.results.values() if e["outcome"] == "skipped")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    if failed or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return 1
    return 0 if passed else 1
