"""Workflows over jobs: chains that pass results, groups with a callback (fan-in)."""

from __future__ import annotations

from .groups import Group, group

__all__ = ["Group", "group"]
