"""What unwrapping one broker item gives: the envelope it carries, or why it carries none."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Unwrapped:
    """The envelope an item carries (not yet validated), or the reason it carries none."""

    payload: str | dict[str, Any] | None
    """The envelope as its JSON text, or as the JSON object already parsed out of the item."""
    reason: str | None = None
    form: str = "unknown"
    """``envelope``, ``celery``, ``kombu``, ``dramatiq`` or ``unknown``: the outermost wrapper."""
    message: dict[str, Any] | None = None
    """A Dramatiq message carrying an envelope, as parsed, its fields checked: the consumer builds
    Dramatiq's message from it rather than parsing the item again."""

    @property
    def envelope(self) -> str | None:
        """The envelope's JSON text, if the item carries one."""
        if isinstance(self.payload, dict):
            return dump(self.payload)
        return self.payload


def dump(value: Any) -> str:
    """Compact JSON text, as envelopes are written."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
