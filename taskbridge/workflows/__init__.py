"""Workflows over jobs: chains that pass results, groups with a callback (fan-in), chunked fan-out."""

from __future__ import annotations

from .fanout import FanOutRef, fan_out, progress, running
from .groups import Group, GroupRef, group
from .sources import cursor, dates, ids

__all__ = ["FanOutRef", "Group", "GroupRef", "cursor", "dates", "fan_out", "group", "ids", "progress", "running"]
