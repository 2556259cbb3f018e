"""``taskbridge contract``: runs the suite through pytest, shows each case as it ends, then a table."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from rich.markup import escape
from rich.table import Table

_COLOURS = {"passed": "green", "failed": "red", "skipped": "yellow"}


class _Collector:
    """Keeps each case's outcome as pytest reports it, and prints a line as each case ends."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.results: dict[str, dict[str, Any]] = {}

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.console.print(f"[red]cannot collect {report.nodeid or 'the contract'}:[/] {report.longrepr}")

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
        ended = report.when == "call" or (report.when == "setup" and not report.passed)
        if ended or (report.when == "teardown" and report.failed):
            case, _, combination = escape(name.removeprefix("test_")).partition("\\[")
            outcome = entry["outcome"]
            self.console.print(
                f"[{_COLOURS[outcome]}]{outcome:<7}[/] {case} [dim]{combination.rstrip(']') or '-'}[/] "
                f"{entry['duration']:.1f}s",
                highlight=False,
            )


def run_contract(
    *, engine: str | None, broker: str | None, coordination: str | None, keyword: str | None = None
) -> int:
    """Run the contract on the given (or configured) combination; 0 only if no case failed."""
    args = ["--pyargs", "taskbridge.testing.contract", "-p", "no:cacheprovider", "-p", "no:terminal"]
    if engine:
        args += ["--taskbridge-engine", engine]
    if broker:
        args += ["--taskbridge-broker", broker]
    if coordination:
        args += ["--taskbridge-coordination", coordination]
    if keyword:
        args += ["-k", keyword]
    console = Console()
    collector = _Collector(console)
    code = pytest.main(args, plugins=[collector])
    table = Table(title="taskbridge contract")
    table.add_column("case")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    for name, entry in collector.results.items():
        outcome = entry["outcome"]
        table.add_row(
            escape(name.removeprefix("test_")),
            f"[{_COLOURS[outcome]}]{outcome}",
            f"{entry['duration']:.1f}",
            escape(entry["detail"]),
        )
    console.print(table)
    passed = sum(1 for e in collector.results.values() if e["outcome"] == "passed")
    failed = sum(1 for e in collector.results.values() if e["outcome"] == "failed")
    skipped = sum(1 for e in collector.results.values() if e["outcome"] == "skipped")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    if failed or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return 1
    return 0 if passed else 1
