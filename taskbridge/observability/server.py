"""The ``/metrics`` endpoint a worker serves: one process's registry, or (multiprocess mode) every
process's values added up, plus the queue-depth gauges.

A worker whose engine forks job processes (Celery prefork, the Dramatiq adapter) serves from a
process of its own, forked before the engine starts, as Dramatiq's Prometheus middleware does:
a scrape reads depths through the broker client, whose libraries hold locks while they work
(kombu's ``cached_property`` holds one lock per property, shared by every instance). A job
process forked while a scrape thread held one would wait on it for ever, and Celery gives the
processes it starts with no time limit to report ready, so the worker would silently run with one
process fewer. With no scrape thread in the worker's main process, nothing is held when it forks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from . import multiprocess
from .depth import QueueDepthCollector
from .metrics import require_prometheus
from .multiprocess import MultiProcessMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("taskbridge.metrics")


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`stop` shuts it down."""

    port: int
    registry: CollectorRegistry | None
    """What is served; None when serving from a process of its own."""
    processes: MultiProcessMetrics | None = None
    """In multiprocess mode, the collector adding up the processes' values."""
    directory: Path | None = None
    owns_directory: bool = False
    _server: Any = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _process: Any = None

    def stop(self) -> None:
        """Stop serving; remove the multiprocess directory if this server created it."""
        self._stopping.set()
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)
            self._process = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.processes is not None:
            multiprocess.stopped_serving(self.processes)
        if self.owns_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def serve(
    port: int,
    addr: str = "0.0.0.0",
    *,
    registry: CollectorRegistry | None = None,
    directory: str | Path | None = None,
    owns_directory: bool = False,
    depth: QueueDepthCollector | None = None,
    archive_every: float = 30.0,
) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` in a background thread.

    With ``directory`` (multiprocess mode), the values of every process writing there are added
    up, and exited processes' values taken into the totals on each scrape and every
    ``archive_every`` seconds; otherwise ``registry`` (default: the global one) is served.
    ``depth`` adds the queue gauges.
    """
    prom = require_prometheus()
    processes = None
    if directory is not None:
        served = prom.CollectorRegistry(auto_describe=False)
        processes = MultiProcessMetrics(directory)
        served.register(processes)
    elif registry is not None:
        served = registry
    else:
        served = prom.CollectorRegistry(auto_describe=False)
        served.register(_Delegate(prom.REGISTRY))
    if depth is not None:
        served.register(depth)
    try:
        httpd, thread = prom.start_http_server(port, addr, registry=served)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {addr}:{port} (TASKBRIDGE_METRICS_PORT / --metrics-port): {exc}"
        ) from None
    server = MetricsServer(
        port=httpd.server_port,
        registry=served,
        processes=processes,
        directory=Path(directory) if directory is not None else None,
        owns_directory=owns_directory,
        _server=httpd,
    )
    server._threads.append(thread)
    if processes is not None:
        multiprocess.serving(processes)
        if archive_every > 0:
            sweeper = threading.Thread(
                target=_sweep,
                args=(processes, server._stopping, archive_every),
                name="taskbridge-metrics-exited",
                daemon=True,
            )
            sweeper.start()
            server._threads.append(sweeper)
    log.info("metrics: serving /metrics on %s:%d", addr, server.port)
    return server


class _Delegate:
    """Collects another registry, so queue gauges can be added without touching it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def _sweep(processes: MultiProcessMetrics, stopping: threading.Event, every: float) -> None:
    while not stopping.wait(every):
        try:
            processes.take_exited()
        except Exception:
            log.exception("metrics: taking in the values of exited processes failed")


def serve_from_own_process(
    port: int,
    addr: str = "0.0.0.0",
    *,
    directory: str | Path,
    owns_directory: bool = False,
    depth: QueueDepthCollector | None = None,
    archive_every: float = 30.0,
) -> MetricsServer:
    """:func:`serve` in multiprocess mode, from a process forked now, so that the calling process
    runs no scrape thread when it later forks job processes (see the module's description).

    Call it before the engine starts. The server process exits when the caller stops it or exits.
    """
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_serve_until_parent_exits,
        args=(writer, port, addr, str(directory), depth, archive_every),
        name="taskbridge-metrics",
        daemon=True,
    )
    process.start()
    writer.close()
    started = reader.poll(60)
    status, value = reader.recv() if started else ("error", "the metrics server process did not start within 60s")
    reader.close()
    if status != "ok":
        process.terminate()
        process.join(10)
        raise ConfigurationError(str(value))
    return MetricsServer(
        port=int(value),
        registry=None,
        directory=Path(directory),
        owns_directory=owns_directory,
        _process=process,
    )


def _serve_until_parent_exits(
    writer: Any, port: int, addr: str, directory: str, depth: QueueDepthCollector | None, archive_every: float
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle; it stops this process
    parent = os.getppid()
    try:
        server = serve(port, addr, directory=directory, depth=depth, archive_every=archive_every)
    except Exception as exc:
        writer.send(("error", str(exc)))
        return
    writer.send(("ok", server.port))
    writer.close()
    while os.getppid() == parent:
        time.sleep(1.0)
    server.stop()
