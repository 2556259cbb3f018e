"""Where a Celery worker's CPU goes over a drain: raw Celery against taskbridge, in every process.

    .venv/bin/python benchmarks/drain_profile.py --broker amqp://guest:guest@127.0.0.1:5672// --jobs 5000
    .venv/bin/python benchmarks/drain_profile.py --broker amqp://guest:guest@127.0.0.1:5672// --callgrind --jobs 1200

Fills a fresh queue with N no-op jobs for each side (``bench_celery``'s) and starts the same worker as
``bench_celery.py`` (prefork concurrency 2, prefetch 1, late acks).

By default the worker runs a CPU-time profiler (cProfile over ``time.process_time``, so waiting
and other load on the machine do not count) in the main process from the moment it is ready and in
each pool process from its start; the script prints, per process kind, CPU microseconds per job
by package and the functions that take most of it. ``--save DIR`` keeps the ``.prof`` files
(``python -m pstats``). cProfile's own cost per call inflates code that makes many small calls:
compare the two sides, not these figures with ``bench_celery.py``'s.

With ``--callgrind`` the worker runs under ``valgrind --tool=callgrind`` instead, twice per side (N/6
jobs, then N), and the script prints the instructions per job of the main process and of the pool
processes: the difference between the two drains, so start-up and shutdown cancel out. The counts
do not depend on the load of the machine (a drain of 1,200 jobs takes a few minutes under valgrind).

Imported by the profiled worker itself (``-A drain_profile:raw_app``, ``worker drain_profile``)
with ``TB_PROFILE_DIR`` set, it installs the profiler through Celery's signals.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

PROFILE_DIR = "TB_PROFILE_DIR"
HERE = Path(__file__).resolve().parent


def _install(directory: str) -> None:
    from celery import signals

    profiler = cProfile.Profile(time.process_time)

    def dump(kind: str) -> None:
        profiler.disable()
        profiler.dump_stats(os.path.join(directory, f"{kind}-{os.getpid()}.prof"))

    @signals.worker_ready.connect(weak=False)
    def main_ready(**_: object) -> None:
        profiler.enable()
        atexit.register(dump, "main")

    @signals.worker_process_init.connect(weak=False)
    def child_started(**_: object) -> None:
        profiler.enable()

    @signals.worker_process_shutdown.connect(weak=False)
    def child_stopping(**_: object) -> None:
        dump("child")


if os.environ.get(PROFILE_DIR):
    _install(os.environ[PROFILE_DIR])

from bench_celery import _use_broker, noop, raw_app, raw_noop  # noqa: E402  (after the profiler's signals)

__all__ = ["noop", "raw_app", "raw_noop"]


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    parts = Path(filename).parts
    for marker in ("site-packages", "adapters", "benchmarks"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else marker
    if "taskbridge" in parts:
        return "taskbridge"
    return "stdlib"


def _report(files: list[Path], jobs: int, top: int) -> dict[str, float]:
    stats = pstats.Stats(*(str(f) for f in files))
    by_package: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, name), (_cc, calls, tottime, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[_package(filename)] += tottime
        rows.append((tottime, calls, f"{Path(filename).name}:{line}:{name}"))
    total = sum(by_package.values())
    print(f"  total {total / jobs * 1e6:8.1f} us/job")
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"    {package:24s} {seconds / jobs * 1e6:8.1f} us/job")
    print(f"  top {top} functions (own time):")
    for tottime, calls, where in sorted(rows, reverse=True)[:top]:
        print(f"    {tottime / jobs * 1e6:7.1f} us/job {calls / jobs:7.2f} calls/job  {where}")
    return {"total": total, **by_package}


def _drain(command: list[str], env: dict[str, str], depth: Callable[[], int]) -> tuple[float, int]:
    """Run a worker until the queue is empty, then stop it with one SIGTERM to its main process, so
    that the pool processes end through Celery (which sends ``worker_process_shutdown``). Returns
    the seconds from start to empty and the main process's pid."""
    worker = subprocess.Popen(command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.perf_counter()
        while depth() > 0:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited: {worker.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        worker.send_signal(signal.SIGTERM)
        worker.wait(600)
        return seconds, worker.pid
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)


def _instructions(directory: Path, main_pid: int) -> tuple[int, int]:
    """Instructions callgrind counted in the worker's main process and in its pool processes (each
    forked process's count starts from its parent's at the fork: the same in both drains)."""
    main = pool = 0
    for path in directory.glob("callgrind.*"):
        text = path.read_text(errors="replace")
        command = re.search(r"^cmd: (.*)$", text, re.M)
        totals = re.search(r"^totals: (\d+)", text, re.M)
        if command is None or totals is None or "python" not in command.group(1):
            continue  # a helper program the worker ran (uname)
        if path.suffix == f".{main_pid}":
            main += int(totals.group(1))
        else:
            pool += int(totals.group(1))
    return main, pool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--side", choices=("raw", "taskbridge", "both"), default="both")
    parser.add_argument("--callgrind", action="store_true", help="count instructions under valgrind instead")
    parser.add_argument("--save", type=Path, default=None, help="keep the .prof (or callgrind) files in this directory")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "TB_BENCH_BROKER": args.broker,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "TASKBRIDGE_ENGINE": "celery",
        "TASKBRIDGE_BROKER_URL": args.broker,
        "TASKBRIDGE_NAMESPACE": f"bench{tag}",
        "TASKBRIDGE_DEFAULT_QUEUE": f"prof-tb-{tag}",
        "TASKBRIDGE_PREFETCH": "1",
        "TASKBRIDGE_CELERY_LOGLEVEL": "WARNING",
    }
    os.environ.update(env)
    import taskbridge
    from taskbridge import get_engine

    _use_broker(args.broker)
    taskbridge.configure()
    engine = get_engine()
    raw_queue, tb_queue = f"prof-raw-{tag}", env["TASKBRIDGE_DEFAULT_QUEUE"]
    raw_app.conf.task_default_queue = raw_queue
    sides = ("raw", "taskbridge") if args.side == "both" else (args.side,)
    commands = {
        "raw": [
            sys.executable, "-m", "celery", "-A", "drain_profile:raw_app", "worker", "-Q", raw_queue, "-P", "prefork",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair", "-n", f"prof-{tag}@%h",
            "--loglevel", "WARNING", "--concurrency", "2",
        ],
        "taskbridge": [
            sys.executable, "-m", "taskbridge", "--log-level", "WARNING", "worker", "drain_profile",
            "--queues", tb_queue, "--concurrency", "2",
        ],
    }  # fmt: skip
    queues = {"raw": raw_queue, "taskbridge": tb_queue}

    def fill(side: str, count: int) -> None:
        if side == "raw":
            for i in range(count):
                raw_noop.delay(i)
        else:
            noop.enqueue_many((i,) for i in range(count))

    try:
        for side in sides:
            with tempfile.TemporaryDirectory() as directory:
                target = args.save / side if args.save else Path(directory)
                depth = lambda q=queues[side]: engine.depth(q)  # noqa: E731
                if args.callgrind:
                    counts = []
                    for count in (max(100, args.jobs // 6), args.jobs):
                        run_dir = target / str(count)
                        run_dir.mkdir(parents=True, exist_ok=True)
                        fill(side, count)
                        valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no"]
                        command = [*valgrind, f"--callgrind-out-file={run_dir}/callgrind.%p", *commands[side]]
                        _, pid = _drain(command, env, depth)
                        counts.append((count, *_instructions(run_dir, pid)))
                    (small, main_small, pool_small), (large, main_large, pool_large) = counts
                    jobs = large - small
                    main_per, pool_per = (main_large - main_small) / jobs, (pool_large - pool_small) / jobs
                    print(
                        f"{side}: instructions per job: main process {main_per / 1e3:,.0f}k, pool processes "
                        f"{pool_per / 1e3:,.0f}k, total {(main_per + pool_per) / 1e3:,.0f}k "
                        f"(drains of {small} and {large} jobs)",
                        flush=True,
                    )
                    continue
                target.mkdir(parents=True, exist_ok=True)
                fill(side, args.jobs)
                seconds, _ = _drain(commands[side], {**env, PROFILE_DIR: str(target)}, depth)
                print(f"{side}: {args.jobs / seconds:.0f} jobs/s under the profiler")
                for kind in ("main", "child"):
                    files = sorted(target.glob(f"{kind}-*.prof"))
                    if not files:
                        print(f" {kind}: no profile written")
                        continue
                    print(f" {kind} process{'es' if len(files) > 1 else ''} ({len(files)}):")
                    _report(files, args.jobs, args.top)
    finally:
        for queue in queues.values():
            engine.purge(queue)
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
