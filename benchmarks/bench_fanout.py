"""Fan-out against a plain enqueue_many: dispatcher memory, wall time and the queue's depth, in one run.

    .venv/bin/python benchmarks/bench_fanout.py --engine celery --broker redis://127.0.0.1:6379/0 --ids 1000000
    .venv/bin/python benchmarks/bench_fanout.py --engine dramatiq --broker amqp://guest:guest@127.0.0.1:5672// \\
        --ids 1000000

For ``--ids`` no-op jobs, first ``enqueue_many`` publishes them all from this process while one
worker drains the queue; then ``fan_out(..., chunk=--chunk, max_depth=--max-depth)`` does the same
through a dispatcher running in its own worker process. Reported: publish and total wall times of
each, the largest queue depth seen (sampled every 100 ms), and the dispatcher's peak RSS (the
largest ``VmHWM`` among its worker's processes, from /proc). This file is also the job module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from taskbridge import job
from taskbridge.engine import delete_queue

HERE = Path(__file__).resolve().parent


@job(name="bench.fan_noop")
def noop(n: int) -> None:
    """Does nothing."""


class _Depths:
    """The largest and the latest depth of a queue, sampled every 100 ms in a thread (which keeps its
    own broker connection busy: an idle one may be dropped by RabbitMQ's heartbeat check)."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self.peak = 0
        self.last: int | None = None
        self._depth = depth
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.last = self._depth()
            self.peak = max(self.peak, self.last)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _peak_rss_mb(group: int) -> float:
    """The largest peak resident set (VmHWM) among the processes of process group ``group``."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


@contextlib.contextmanager
def _worker(env: dict[str, str], queue: str, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "taskbridge", "worker", "bench_fanout", "--queues", queue]
    command += ["--concurrency", str(concurrency), "--any-queue"]
    worker = subprocess.Popen(
        command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _until(check: Callable[[], bool], what: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True, choices=["celery", "dramatiq"])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--coordination", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--max-depth", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="threads/children of the worker running the jobs")
    options = parser.parse_args()

    queue = f"benchfan{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TASKBRIDGE_ENGINE": options.engine,
        "TASKBRIDGE_BROKER_URL": options.broker,
        "TASKBRIDGE_COORDINATION_URL": options.coordination,
        "TASKBRIDGE_DEFAULT_QUEUE": queue,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    os.environ.update(env)
    import taskbridge
    from taskbridge.workflows import fan_out, ids, progress

    taskbridge.configure()
    engine = taskbridge.get_engine()
    count = options.ids
    try:
        with _worker(env, queue, options.concurrency):
            depths = _Depths(lambda: engine.depth(queue))
            started = time.perf_counter()
            noop.enqueue_many((i,) for i in range(1, count + 1))
            published = time.perf_counter() - started
            _until(lambda: depths.last == 0, "the enqueue_many backlog drained")
            plain = (published, time.perf_counter() - started, depths.stop())

            dispatch_queue = f"{queue}_fan"
            with _worker(env, dispatch_queue, 1) as dispatcher:
                depths = _Depths(lambda: engine.depth(queue))
                started = time.perf_counter()
                ref = fan_out(
                    noop, ids(1, count), chunk=options.chunk, max_depth=options.max_depth, queue=dispatch_queue
                )
                _until(lambda: bool((progress(ref.id) or {}).get("finished")), "the fan-out published every chunk")
                published_fan = time.perf_counter() - started
                rss = _peak_rss_mb(dispatcher.pid)
                _until(lambda: depths.last == 0, "the fan-out's jobs drained")
                fan = (published_fan, time.perf_counter() - started, depths.stop())
    finally:
        for name in (queue, f"{queue}_fan"):
            with contextlib.suppress(Exception):
                delete_queue(engine, name)
        engine.close()

    print(
        f"{options.engine} on {options.broker.split(':', 1)[0]}: {count:,} ids, chunk {options.chunk:,}, "
        f"max_depth {options.max_depth:,}, job worker concurrency {options.concurrency}"
    )
    print(f"  enqueue_many  published in {plain[0]:7.1f} s, drained after {plain[1]:7.1f} s, max depth {plain[2]:>9,}")
    print(f"  fan_out       published in {fan[0]:7.1f} s, drained after {fan[1]:7.1f} s, max depth {fan[2]:>9,}")
    print(f"  dispatcher peak RSS {rss:.1f} MB (largest VmHWM among its worker's processes)")


if __name__ == "__main__":
    main()
