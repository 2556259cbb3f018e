"""Helpers shared by the tests (the fixtures that use them are in conftest.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from taskbridge.config import Settings
from taskbridge.coordination import MemoryCoordination
from taskbridge.envelope import Envelope, decode
from taskbridge.memory import MemoryEngine
from taskbridge.runner import Runner
from taskbridge.testing import KNOWN, Combination, Harness, unavailable_reason

TESTS_DIR = Path(__file__).parent


def command_env(**extra: str) -> dict[str, str]:
    """The environment for a ``taskbridge`` command a test starts: this one without taskbridge's,
    Prometheus's and Sentry's settings, ``tests/`` importable, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKBRIDGE_", "PROMETHEUS_", "SENTRY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def unavailable(reason: str) -> NoReturn:
    """Skip the test because a server is missing; in CI (``CI=true``) fail it instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def open_harness(
    name: str | Combination, workdir: Path, jobs_module: str, settings: Mapping[str, str | None] | None = None
) -> Iterator[Harness]:
    """A contract :class:`Harness` on the known combination ``name`` (or on a combination of its
    own) whose workers import ``jobs_module`` from ``tests/``; skipped (failed under CI=true) when
    the combination is unavailable."""
    combination = name if isinstance(name, Combination) else KNOWN[name]
    reason = unavailable_reason(combination)
    if reason:
        unavailable(f"{combination}: {reason}")
    pythonpath = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    harness = Harness(
        combination, workdir, settings=settings, jobs_module=jobs_module, worker_env={"PYTHONPATH": pythonpath}
    )
    try:
        yield harness
    finally:
        harness.close()


@dataclass
class Embedded:
    """The embedded engine with workers off (``memory://?autostart=0``), its store and a runner,
    installed as this process's engine, coordination store and settings."""

    settings: Settings
    engine: MemoryEngine
    coordination: MemoryCoordination
    runner: Runner

    def dead_letters(self, queue: str) -> list[Envelope]:
        """The records in ``queue``'s dead-letter queue."""
        return [decode(body) for body in self.engine.messages(queue + self.settings.dead_letter_suffix)]

    def queued(self, queue: str) -> list[Envelope]:
        """Every envelope waiting in ``queue``, delayed ones included."""
        return [decode(body) for body in self.engine.messages(queue, include_delayed=True)]


EmbeddedFactory = Callable[..., Embedded]
