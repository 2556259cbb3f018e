"""Helpers shared by the tests (the fixtures that use them are in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from taskbridge.config import Settings
from taskbridge.coordination import MemoryCoordination
from taskbridge.envelope import Envelope, decode
from taskbridge.memory import MemoryEngine
from taskbridge.runner import Runner


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
