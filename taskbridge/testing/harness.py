"""Runs contract cases against one engine x transport: configures both sides, starts and kills
real worker processes, and reads back what the jobs recorded."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from taskbridge import configure, get_engine
from taskbridge.config import mask_url
from taskbridge.engine import Engine, delete_queue, load_engine_factory
from taskbridge.errors import UnknownEngineError
from taskbridge.layout import dead_letter_queue

from .jobs import EVENTS_ENV

DEFAULT_SQS_ENDPOINT = "http://127.0.0.1:4566"
DEFAULT_COORDINATION = "redis://127.0.0.1:6379/1"

# Short enough that the suite stays quick, long enough for 2-core CI machines.
CONTRACT_SETTINGS = {
    "TASKBRIDGE_VISIBILITY_TIMEOUT": "10",
    "TASKBRIDGE_MAX_NATIVE_DELAY": "2",
    "TASKBRIDGE_LOCK_RETRY": "0.25",
    "TASKBRIDGE_INLINE_WAIT_MAX": "0.5",
    "TASKBRIDGE_DEFAULT_TIMEOUT": "60",
}


@dataclass(frozen=True)
class Combination:
    """One engine on one transport, with the coordination store its workers share."""

    engine: str
    broker_url: str
    coordination_url: str | None = None

    @property
    def name(self) -> str:
        scheme = urlsplit(self.broker_url).scheme
        return self.engine if scheme == "memory" else f"{self.engine}-{scheme}"

    def __str__(self) -> str:
        return self.name


KNOWN: dict[str, Combination] = {
    c.name: c
    for c in [
        Combination("memory", "memory://?autostart=0"),
        *(
            Combination(engine, url)
            for engine in ("celery", "dramatiq")
            for url in ("redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//", "sqs://")
        ),
    ]
}


def unavailable_reason(combination: Combination) -> str | None:
    """Why this combination cannot run here (engine not installed, server unreachable), or None."""
    try:
        load_engine_factory(combination.engine)
    except UnknownEngineError as exc:
        return str(exc)
    targets = [combination.broker_url]
    if combination.engine != "memory":
        targets.append(
            combination.coordination_url or os.environ.get("TASKBRIDGE_COORDINATION_URL") or DEFAULT_COORDINATION
        )
    for url in targets:
        parts = urlsplit(url)
        if parts.scheme == "memory":
            continue
        if parts.scheme == "sqs":
            endpoint = urlsplit(os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT))
            host, port = endpoint.hostname or "127.0.0.1", endpoint.port or 443
        else:
            default_port = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}.get(parts.scheme, 0)
            host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError as exc:
            return f"{mask_url(url)}: cannot connect to {host}:{port} ({exc})"
    return None


@dataclass(frozen=True)
class RawItem:
    """An item written straight into a queue, past taskbridge and the engine's producer."""

    label: str
    body: bytes
    content_type: str | None = None
    """Sent as the transport's content-type property where it has one (AMQP), else ignored."""
    headers: dict[str, Any] = field(default_factory=dict)
    """Sent as the transport's message headers/attributes where it has them, else ignored."""


def wire_support(engine: Engine) -> ModuleType | None:
    """The engine's test support for raw items: the ``testing`` module of the engine's package, with
    ``put_raw(engine, queue, item)`` and ``engine_items(engine, queue, envelope_text) -> list[RawItem]``
    (items shaped like the engine's own messages, but with missing or null fields). None if it has
    none; the memory engine's is built in."""
    package = type(engine).__module__.split(".", 1)[0]
    if package == "taskbridge":
        return None
    try:
        return importlib.import_module(f"{package}.testing")
    except ImportError:
        return None


class Harness:
    """Everything one contract case needs: a fresh queue, the settings, workers and the events.

    ``settings`` overrides :data:`CONTRACT_SETTINGS` (``None`` leaves a setting unset, so its
    default applies); ``jobs_module`` is the module worker processes import (it records with
    :func:`taskbridge.testing.jobs.record`); ``worker_env`` is added to every worker's environment.
    """

    def __init__(
        self,
        combination: Combination,
        workdir: Path,
        *,
        settings: Mapping[str, str | None] | None = None,
        jobs_module: str = "taskbridge.testing.jobs",
        worker_env: Mapping[str, str] | None = None,
    ) -> None:
        self.combination = combination
        self.workdir = workdir
        self.jobs_module = jobs_module
        self.worker_env = dict(worker_env or {})
        run = uuid.uuid4().hex[:10]
        self.queue = f"tb{run}"
        self.events_path = workdir / "events.jsonl"
        self.events_path.touch()
        chosen = {**CONTRACT_SETTINGS, **(settings or {})}
        unset = [key for key, value in chosen.items() if value is None]
        self.env: dict[str, str] = {
            **{key: value for key, value in chosen.items() if value is not None},
            "TASKBRIDGE_ENGINE": combination.engine,
            "TASKBRIDGE_BROKER_URL": combination.broker_url,
            "TASKBRIDGE_NAMESPACE": f"tbc{run}",
            "TASKBRIDGE_DEFAULT_QUEUE": self.queue,
            EVENTS_ENV: str(self.events_path),
        }
        if self.multi_process:
            self.env["TASKBRIDGE_COORDINATION_URL"] = (
                combination.coordination_url or os.environ.get("TASKBRIDGE_COORDINATION_URL") or DEFAULT_COORDINATION
            )
            if urlsplit(combination.broker_url).scheme == "sqs":
                self.env.setdefault(
                    "TASKBRIDGE_SQS_ENDPOINT_URL",
                    os.environ.get("TASKBRIDGE_SQS_ENDPOINT_URL", DEFAULT_SQS_ENDPOINT),
                )
        self._saved_env = {k: os.environ.get(k) for k in [*self.env, *unset]}
        for key in unset:
            os.environ.pop(key, None)
        os.environ.update(self.env)
        configure()
        self.engine: Engine = get_engine()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.schedulers: list[subprocess.Popen[bytes]] = []
        self._embedded_schedulers: list[Any] = []
        self._logs: list[Path] = []

    @property
    def multi_process(self) -> bool:
        return self.combination.engine != "memory"

    @property
    def dead_queue(self) -> str:
        return dead_letter_queue(self.queue)

    def start_workers(
        self,
        count: int = 1,
        concurrency: int = 2,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> None:
        """Start ``count`` worker processes (the memory engine: threads in this process).

        ``queues`` are consumed instead of the harness's own queue (e.g. the queues your jobs
        declare); ``args`` are extra ``taskbridge worker`` options and ``env`` extra environment
        variables of these processes (neither applies to the memory engine's threads)."""
        consumed = list(queues or [self.queue])
        if not self.multi_process:
            from taskbridge.memory import MemoryEngine
            from taskbridge.worker import prepare

            assert isinstance(self.engine, MemoryEngine)
            prepare(self.engine)
            self.engine.start(consumed, count * concurrency)
            return
        for _ in range(count):
            log_path = self.workdir / f"worker-{len(self._logs)}.log"
            self._logs.append(log_path)
            with open(log_path, "wb") as log:
                self.workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "taskbridge",
                            "worker",
                            self.jobs_module,
                            "--queues",
                            ",".join(consumed),
                            "--concurrency",
                            str(concurrency),
                            *args,
                        ],
                        env={**os.environ, **self.env, **self.worker_env, **(env or {})},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def start_schedulers(self, count: int = 1, *, lease: float = 2.0, env: Mapping[str, str] | None = None) -> None:
        """Start ``count`` ``taskbridge scheduler`` processes for the jobs module, with a leader lease
        of ``lease`` seconds (the memory engine: scheduler threads in this process, sharing its store)."""
        if not self.multi_process:
            from taskbridge.coordination import get_coordination
            from taskbridge.job import registry
            from taskbridge.scheduling import Scheduler
            from taskbridge.worker import jobs_of

            importlib.import_module(self.jobs_module)
            own = [registry()[name] for name in jobs_of(self.jobs_module) if name in registry()]
            for _ in range(count):
                scheduler = Scheduler(own, get_coordination(), lease=lease)
                scheduler.start()
                self._embedded_schedulers.append(scheduler)
            return
        for _ in range(count):
            log_path = self.workdir / f"scheduler-{len(self._logs)}.log"
            self._logs.append(log_path)
            with open(log_path, "wb") as log:
                self.schedulers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "taskbridge", "scheduler", self.jobs_module, "--lease", str(lease)],
                        env={**os.environ, **self.env, **self.worker_env, **(env or {})},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def stop_schedulers(self, grace: float = 5.0) -> None:
        """SIGTERM the scheduler processes (they give their lease up) and wait for them to exit."""
        for scheduler in self._embedded_schedulers:
            scheduler.stop()
        self._embedded_schedulers = []
        for process in self.schedulers:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.schedulers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)
            process.wait(10)
        self.schedulers = []

    def kill_workers(self) -> None:
        """SIGKILL every worker process and its children, as a crash would."""
        for worker in self.workers:
            _signal_group(worker, signal.SIGKILL)
            worker.wait(10)
        self.workers = []

    def stop_workers(self, grace: float = 5.0) -> None:
        if not self.multi_process:
            self.engine.stop()  # type: ignore[attr-defined]
            return
        for worker in self.workers:
            _signal_group(worker, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(worker, signal.SIGKILL)
            worker.wait(10)
        self.workers = []

    def events(self, kind: str | None = None, job: str | None = None) -> list[dict[str, Any]]:
        """Recorded events, oldest first, optionally of one kind and job."""
        found = []
        # The text after the last newline is a line a worker is writing right now: read it next time.
        for line in self.events_path.read_text().split("\n")[:-1]:
            if not line.strip():
                continue
            event = json.loads(line)
            if kind is not None and event["event"] != kind:
                continue
            if job is not None and not str(event.get("job", "")).endswith(job):
                continue
            found.append(event)
        return found

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``check`` until it returns something truthy; fail with ``what`` and worker logs."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.combination}: {what} (waited {timeout:g}s)\n{self.diagnostics()}")
            self._check_workers_alive()
            time.sleep(0.1)

    def depth(self, queue: str) -> int:
        return self.engine.depth(queue)

    @property
    def writes_raw(self) -> bool:
        """Whether raw items can be written into this combination's queues."""
        return not self.multi_process or wire_support(self.engine) is not None

    def put_raw(self, item: RawItem, queue: str | None = None) -> None:
        """Write ``item`` straight into ``queue`` (default: the harness's queue) as another tool would."""
        target = queue or self.queue
        support = wire_support(self.engine)
        if support is not None:
            support.put_raw(self.engine, target, item)
            return
        from taskbridge.memory import MemoryEngine

        if not isinstance(self.engine, MemoryEngine):
            raise NotImplementedError(f"engine {self.engine.name!r} offers no raw writer for the contract")
        self.engine.put_raw(target, item.body)

    def engine_items(self, envelope_text: str) -> list[RawItem]:
        """Items shaped like the engine's own messages (missing or null fields, a bad envelope inside)."""
        support = wire_support(self.engine)
        return list(support.engine_items(self.engine, self.queue, envelope_text)) if support else []

    def worker_logs(self, tail: int | None = None) -> str:
        """What the worker processes wrote, each log (or its last ``tail`` characters) under its name."""
        parts = []
        for log in self._logs:
            text = log.read_text(errors="replace")
            parts.append(f"--- {log.name} ---\n{text[-tail:] if tail else text}")
        return "\n".join(parts)

    def diagnostics(self) -> str:
        return f"events: {self.events_path.read_text()[-3000:]}\n{self.worker_logs(tail=4000)}"

    def _check_workers_alive(self) -> None:
        for worker in [*self.workers, *self.schedulers]:
            if worker.poll() is not None:
                raise AssertionError(
                    f"{self.combination}: a worker exited with code {worker.returncode}\n{self.diagnostics()}"
                )

    def close(self) -> None:
        try:
            self.stop_schedulers(grace=3.0)
            self.stop_workers(grace=3.0)
            for queue in (self.queue, self.dead_queue):
                with contextlib.suppress(Exception):
                    delete_queue(self.engine, queue)  # the user's broker keeps no queue of a case
        finally:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            configure()


def _signal_group(worker: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, sig)
