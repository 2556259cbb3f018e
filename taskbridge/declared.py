"""The jobs declared in this process, by name (filled by the ``@job`` decorator)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job

_registry: dict[str, Job[..., Any]] = {}


def registry() -> dict[str, Job[..., Any]]:
    """Every job declared in this process, by name."""
    return _registry


def lookup(name: str) -> Job[..., Any] | None:
    return _registry.get(name)
