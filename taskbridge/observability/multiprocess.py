"""One set of metrics over every process a worker runs jobs in: prometheus-client's multiprocess mode.

Celery's prefork children and the Dramatiq adapter's processes each run jobs. The worker points
``PROMETHEUS_MULTIPROC_DIR`` at one directory before prometheus-client is first imported, so every
process it starts writes its values to files there (``<type>_<pid>.db``), and its metrics server
adds them up on each scrape with prometheus-client's ``MultiProcessCollector``.

When a process exits (a recycled Celery child, a Dramatiq process over its memory limit, a
crash), :class:`MultiProcessMetrics` adds its counters, histograms and summaries to a running
total kept by the server and removes its files, and ``mark_process_dead`` drops its live gauges
(``taskbridge_jobs_in_progress``). So no count is lost or seen twice, and the directory and the
cost of a scrape do not grow with the number of processes restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: the directory where each process writes its values."""
LEGACY_MULTIPROC_ENV = "prometheus_multiproc_dir"
"""The older spelling prometheus-client still reads."""

ACTIVE_ENV = "TASKBRIDGE_METRICS_ACTIVE"
"""Set by the worker when it serves metrics, so processes it starts collect them too."""

_SUMMED_TYPES = ("counter", "histogram", "summary")
"""Files whose values add up across processes, so an exited process's share can be kept as a total."""
_LIVE_GAUGES = "gauge_live"
"""Files of gauges that count only running processes (``mark_process_dead`` removes them)."""

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def configured_directory() -> str | None:
    """The multiprocess directory this process writes to, if any."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(LEGACY_MULTIPROC_ENV) or None


def use_directory(path: str | Path | None = None, *, wipe: bool = True) -> Path:
    """Put this process and every process it starts in multiprocess mode, writing to ``path``.

    ``path`` defaults to ``$PROMETHEUS_MULTIPROC_DIR``, else a new private temporary directory.
    With ``wipe`` (the default), values left by an earlier run are removed: one directory belongs
    to one metrics server. Call it before prometheus-client is imported (prometheus-client picks
    its mode once, on import), unless ``PROMETHEUS_MULTIPROC_DIR`` was already set then.
    """
    already = configured_directory()
    if "prometheus_client" in sys.modules and not already:
        raise ConfigurationError(
            "prometheus_client was imported before the worker set up multiprocess metrics, so job "
            "processes would count nothing: set PROMETHEUS_MULTIPROC_DIR in the worker's environment, "
            "or do not import prometheus_client before the worker starts"
        )
    given = path or already
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        if wipe:
            for stale in glob.glob(str(directory / "*.db")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
    else:
        _remove_abandoned_directories()
        directory = Path(tempfile.mkdtemp(prefix=f"taskbridge-metrics-{os.getpid()}-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def _remove_abandoned_directories() -> None:
    """Remove private directories of workers that died without cleaning up (SIGKILL)."""
    for candidate in glob.glob(os.path.join(tempfile.gettempdir(), "taskbridge-metrics-*-*")):
        try:
            owner = int(os.path.basename(candidate).split("-")[2])
            if os.stat(candidate).st_uid != os.getuid() or _alive(owner):
                continue
        except (ValueError, IndexError, OSError):
            continue
        shutil.rmtree(candidate, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: str) -> tuple[str, int] | None:
    """``(kind, pid)`` of a value file named ``<type>_<pid>.db`` or ``gauge_<mode>_<pid>.db``."""
    name = os.path.basename(path)
    kind, _, pid = name.removesuffix(".db").rpartition("_")
    return (kind, int(pid)) if name.endswith(".db") and kind and pid.isdigit() else None


class MultiProcessMetrics:
    """A prometheus-client collector: the values of every process writing to ``directory``, added up,
    plus what processes that exited had counted (kept here once their files are removed).

    A process that reuses the id of an exited one before its files were taken in continues the
    same files, so the values still add up.
    """

    def __init__(self, directory: str | Path) -> None:
        # Imported here, in the thread that starts the server: a scrape thread importing while the
        # engine forks a worker process would leave the child waiting on the import's lock.
        from prometheus_client.metrics_core import Metric
        from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
        from prometheus_client.samples import Sample

        self._metric, self._sample = Metric, Sample
        self._merge, self._mark_process_dead = MultiProcessCollector.merge, mark_process_dead
        self.directory = str(directory)
        self._lock = threading.Lock()
        self._exited: dict[str, tuple[str, str, dict[SampleKey, float]]] = {}
        """Per metric name: type, help and the summed samples of exited processes."""

    def take_exited(self) -> int:
        """Fold the values of processes that are no longer running into the totals, remove their
        files and drop their live gauges; returns how many processes that was."""
        with self._lock:
            return self._take_exited()

    def _take_exited(self) -> int:
        summed: dict[int, list[str]] = {}
        live: set[int] = set()
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            owner = _owner(path)
            if owner is not None and owner[0] in _SUMMED_TYPES:
                summed.setdefault(owner[1], []).append(path)
            elif owner is not None and owner[0].startswith(_LIVE_GAUGES):
                live.add(owner[1])
        exited = [pid for pid in {*summed, *live} if not _alive(pid)]
        files = [path for pid in exited for path in summed.get(pid, ())]
        for metric in self._merge(files, accumulate=True):
            _, _, totals = self._exited.setdefault(metric.name, (metric.type, metric.documentation, {}))
            for sample in metric.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                totals[key] = totals.get(key, 0.0) + sample.value
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        for pid in exited:
            self._mark_process_dead(pid, self.directory)
        return len(exited)

    def collect(self) -> Iterable[Metric]:
        """Every metric, added up over all processes, running or exited."""
        with self._lock:
            self._take_exited()
            running = {m.name: m for m in self._merge(glob.glob(os.path.join(self.directory, "*.db")))}
            collected = [metric for name, metric in running.items() if name not in self._exited]
            for name, (kind, documentation, totals) in self._exited.items():
                values = dict(totals)
                merged = self._metric(name, documentation, kind)
                metric = running.get(name)
                for sample in metric.samples if metric is not None else ():
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    total = sample.value + values.pop(key, 0.0)
                    merged.samples.append(self._sample(sample.name, sample.labels, total))
                merged.samples.extend(self._sample(s, dict(labels), value) for (s, labels), value in values.items())
                collected.append(merged)
            return collected


_serving: MultiProcessMetrics | None = None


def serving(collector: MultiProcessMetrics) -> None:
    """Record the collector this process's metrics server reads, for :func:`process_exited`."""
    global _serving
    _serving = collector


def stopped_serving(collector: MultiProcessMetrics) -> None:
    """Forget ``collector`` once its server stopped."""
    global _serving
    if _serving is collector:
        _serving = None


def process_exited(pid: int) -> None:
    """Tell the worker's metrics server that worker process ``pid`` exited, so its values are
    taken into the totals at once. Optional (exited processes are also found on each scrape and
    every 30 seconds) and safe to call whether or not metrics are served."""
    collector = _serving
    if collector is not None:
        collector.take_exited()
