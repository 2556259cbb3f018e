"""Prometheus metrics, under the name the documentation and existing code use.

The code lives in :mod:`taskbridge.observability`: ``metrics`` (names, labels, event mapping,
:func:`install`), ``multiprocess`` (one set of metrics over a worker's processes), ``depth``
(queue gauges) and ``server`` (``/metrics``). Everything public there is importable from here.
"""

from __future__ import annotations

from .observability.depth import QueueDepthCollector
from .observability.metrics import (
    DURATION_BUCKETS,
    JOB_LABELS,
    OUTCOMES,
    REASONS,
    WAIT_BUCKETS,
    Metrics,
    available,
    install,
    installed,
    outcome_reason,
    uninstall,
)
from .observability.multiprocess import (
    ACTIVE_ENV,
    MULTIPROC_ENV,
    MultiProcessMetrics,
    process_exited,
    use_directory,
)
from .observability.server import MetricsServer, serve

__all__ = [
    "ACTIVE_ENV",
    "DURATION_BUCKETS",
    "JOB_LABELS",
    "MULTIPROC_ENV",
    "OUTCOMES",
    "REASONS",
    "WAIT_BUCKETS",
    "Metrics",
    "MetricsServer",
    "MultiProcessMetrics",
    "QueueDepthCollector",
    "available",
    "install",
    "installed",
    "outcome_reason",
    "process_exited",
    "serve",
    "uninstall",
    "use_directory",
]
