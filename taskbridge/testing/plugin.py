"""pytest plugin (entry point ``pytest11``): the ``harness`` and ``job_registry`` fixtures and the
combination options.

``--taskbridge-combinations memory,celery-redis`` picks known combinations; or give one with
``--taskbridge-engine`` and ``--taskbridge-broker`` (default: the configured settings). A
combination whose engine is missing or whose server is unreachable is skipped with the reason,
and fails instead when ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .harness import KNOWN, Combination, Harness, unavailable_reason
from .isolation import isolated_jobs

if TYPE_CHECKING:
    from taskbridge.job import Job


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("taskbridge", "taskbridge contract suite")
    group.addoption("--taskbridge-engine", default=None, help="engine to run the contract on")
    group.addoption("--taskbridge-broker", default=None, help="broker URL to run the contract on")
    group.addoption("--taskbridge-coordination", default=None, help="redis:// URL shared by workers")
    group.addoption(
        "--taskbridge-combinations",
        default=None,
        help=f"comma-separated known combinations: {', '.join(KNOWN)} (or 'all')",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "processes: needs an engine that runs jobs in worker processes")
    config.addinivalue_line(
        "markers", "harness_settings(settings): TASKBRIDGE_* settings of the test's harness, over the contract's"
    )


def selected_combinations(config: pytest.Config) -> list[Combination]:
    names = config.getoption("--taskbridge-combinations") or os.environ.get("TASKBRIDGE_CONTRACT_COMBINATIONS")
    if names:
        chosen = list(KNOWN) if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in KNOWN]
        if unknown:
            raise pytest.UsageError(f"unknown combinations {unknown}; known: {', '.join(KNOWN)}")
        return [KNOWN[n] for n in chosen]
    engine = config.getoption("--taskbridge-engine") or os.environ.get("TASKBRIDGE_ENGINE", "memory")
    broker = config.getoption("--taskbridge-broker") or os.environ.get("TASKBRIDGE_BROKER_URL")
    coordination = config.getoption("--taskbridge-coordination") or os.environ.get("TASKBRIDGE_COORDINATION_URL")
    if engine == "memory":
        return [KNOWN["memory"]]
    if not broker:
        raise pytest.UsageError(f"engine {engine!r} needs --taskbridge-broker URL (or TASKBRIDGE_BROKER_URL)")
    return [Combination(engine, broker, coordination)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "taskbridge_combination" in metafunc.fixturenames:
        combos = selected_combinations(metafunc.config)
        metafunc.parametrize("taskbridge_combination", combos, ids=[c.name for c in combos])


@pytest.fixture
def harness(taskbridge_combination: Combination, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A fresh queue and settings on one combination; workers are started by the test."""
    reason = unavailable_reason(taskbridge_combination)
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{taskbridge_combination}: {reason}")
        pytest.skip(f"{taskbridge_combination}: {reason}")
    if request.node.get_closest_marker("processes") and taskbridge_combination.engine == "memory":
        pytest.skip("the memory engine runs jobs inside this process: killing its worker would end the test")
    marker = request.node.get_closest_marker("harness_settings")
    h = Harness(taskbridge_combination, tmp_path, settings=marker.args[0] if marker else None)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def job_registry() -> Iterator[Mapping[str, Job[..., Any]]]:
    """The jobs declared in this process, by name; those the test declares with ``@job`` are
    forgotten after it (see :func:`taskbridge.testing.isolated_jobs`).

    Ask for it before the fixtures that start workers or build an engine, so that it ends after
    them: fixtures are torn down in the reverse order they were set up.
    """
    with isolated_jobs() as jobs:
        yield jobs
