"""Which :class:`~taskbridge_celery.engine.CeleryEngine` a Celery app belongs to.

Celery builds the worker's consumer and requests itself, knowing only the app; they find the
engine (its runner, its transport's facts) here, by app.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from celery import Celery

if TYPE_CHECKING:
    from .engine import CeleryEngine

_engines: weakref.WeakKeyDictionary[Celery, CeleryEngine] = weakref.WeakKeyDictionary()


def attach(app: Celery, engine: CeleryEngine) -> None:
    """Record that ``app`` is the Celery app of ``engine``."""
    _engines[app] = engine


def engine_of(app: Celery) -> CeleryEngine:
    """The engine whose Celery app is ``app``; LookupError for an app no engine built."""
    try:
        return _engines[app]
    except KeyError:
        raise LookupError(f"the Celery app {app.main!r} was not built by a taskbridge CeleryEngine") from None
