"""The worker under a 10x backlog: drain rate and worker memory with 200,000 queued jobs against 20,000.

    .venv/bin/python benchmarks/bench_backlog.py --engine dramatiq --broker redis://127.0.0.1:6379/0
    .venv/bin/python benchmarks/bench_backlog.py --engine celery --broker redis://127.0.0.1:6379/0 --rounds 1
    .venv/bin/python benchmarks/bench_backlog.py --engine dramatiq --quick          # 2,000 against 20,000

For each side (the raw engine and taskbridge, with the workers of ``bench_celery.py`` and
``bench_dramatiq.py``) and each backlog (``--jobs`` and ten times as many) it fills a fresh queue
with no-op jobs, starts one worker and measures its drain rate over the same number of jobs
(80% of ``--jobs``, after the first 10%), while the queue is still that deep. The worker's
resident memory (all its processes) is sampled over that window, and the CPU time per job of the
worker (all its processes) and of the broker (when it runs on this machine) is taken over it: a
per-message cost that grows with the queue shows in the worker's CPU per job, a broker that slows
with a deep queue in the broker's, whatever the rate does. Sides alternate (raw small, taskbridge
small, taskbridge big, raw big; reversed in odd rounds) and the table gives medians over
``--rounds``: the big/small drain ratio of each side (1.0 = no per-message cost that grows with
the queue) and the memory growth over the window.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import broker_cpu, group_cpu, group_rss

from taskbridge.engine import delete_queue

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024


class Side:
    """How one side fills a queue and which worker drains it."""

    def __init__(
        self,
        fill: Callable[[str, int], None],
        command: Callable[[str], list[str]],
        env: Callable[[str], dict[str, str]],
    ):
        self.fill, self.command, self.env = fill, command, env


def celery_sides(threads: int) -> dict[str, Side]:
    import bench_celery

    def raw_fill(queue: str, n: int) -> None:
        bench_celery.raw_app.conf.task_default_queue = queue
        for i in range(n):
            bench_celery.raw_noop.delay(i)

    def tb_fill(queue: str, n: int) -> None:
        for start in range(0, n, 10_000):
            bench_celery.noop.options(queue=queue).enqueue_many((i,) for i in range(start, min(n, start + 10_000)))

    python, tb_worker = sys.executable, _tb_worker()
    raw = [python, "-m", "celery", "-A", "bench_celery:raw_app", "worker", "-c", "2", "-P", "prefork"]
    raw += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair"]
    return {
        "raw": Side(raw_fill, lambda q: [*raw, "-Q", q, "-n", f"{q}@%h"], lambda q: {}),
        "taskbridge": Side(
            tb_fill,
            lambda q: [*tb_worker, "bench_celery", "--queues", q, "--concurrency", "2"],
            lambda q: {"TASKBRIDGE_DEFAULT_QUEUE": q},
        ),
    }


def dramatiq_sides(threads: int) -> dict[str, Side]:
    import bench_dramatiq

    def raw_fill(queue: str, n: int) -> None:
        os.environ[bench_dramatiq.RAW_QUEUE_ENV] = queue
        actor = bench_dramatiq.setup_raw()
        for _ in range(n):
            actor.send()

    def tb_fill(queue: str, n: int) -> None:
        for start in range(0, n, 10_000):
            bench_dramatiq.noop.options(queue=queue).enqueue_many(() for _ in range(start, min(n, start + 10_000)))

    python, tb_worker = sys.executable, _tb_worker()
    per_process = ["--processes", "1", "--threads", str(threads)]
    return {
        "raw": Side(
            raw_fill,
            lambda q: [python, "-m", "dramatiq", "bench_dramatiq:setup_raw", *per_process, "--queues", q],
            lambda q: {bench_dramatiq.RAW_QUEUE_ENV: q},
        ),
        "taskbridge": Side(
            tb_fill,
            lambda q: [*tb_worker, "bench_dramatiq", "--queues", q, *per_process],
            lambda q: {"TASKBRIDGE_DEFAULT_QUEUE": q},
        ),
    }


def _tb_worker() -> list[str]:
    return [sys.executable, "-m", "taskbridge", "--log-level", "WARNING", "worker"]


def drain(side: Side, queue: str, depth: int, skip: int, window: int, log: Path, broker: str) -> dict[str, float]:
    """Fill ``queue`` with ``depth`` jobs, start a worker, and time jobs ``skip`` to ``skip + window``."""
    from taskbridge import get_engine

    engine = get_engine()
    side.fill(queue, depth)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        **side.env(queue),
    }
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            side.command(queue), env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 1800
        samples: list[int] = []
        started = None
        while True:
            left = engine.depth(queue)
            if started is None and left <= depth - skip:
                started, first = time.perf_counter(), left
                worker_cpu, server_cpu = group_cpu(worker.pid), broker_cpu(broker)
            if started is not None:
                samples.append(group_rss(worker.pid))
                if left <= depth - skip - window:
                    seconds = time.perf_counter() - started
                    worker_cpu, server_cpu = group_cpu(worker.pid) - worker_cpu, _spent(broker_cpu(broker), server_cpu)
                    break
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not drain {window} jobs in 30 minutes; see {log}")
            time.sleep(0.05 if started is None else 0.25)
        done = first - left
        return {
            "rate": done / seconds,
            "worker_cpu_us": worker_cpu / done * 1e6,
            "broker_cpu_us": server_cpu / done * 1e6 if server_cpu is not None else float("nan"),
            # A tenth into the window: a worker process still starting up is not its steady size.
            "rss_start_mb": samples[len(samples) // 10] / MB,
            "rss_end_mb": samples[-1] / MB,
            "rss_max_mb": max(samples) / MB,
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        delete_queue(engine, queue)


def _spent(now: float | None, before: float | None) -> float | None:
    return now - before if now is not None and before is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("celery", "dramatiq"), default="dramatiq")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis:// or amqp:// URL")
    parser.add_argument("--jobs", type=int, default=None, help="the small backlog (default 20,000; 2,000 quick)")
    parser.add_argument("--factor", type=int, default=10, help="the big backlog is this many times the small one")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; medians are reported (default 3; 1 quick)")
    parser.add_argument("--threads", type=int, default=8, help="Dramatiq worker threads")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    small = args.jobs or (2_000 if args.quick else 20_000)
    big = small * args.factor
    rounds = args.rounds or (1 if args.quick else 3)
    skip, window = small // 10, small * 8 // 10
    tag = uuid.uuid4().hex[:8]
    os.environ.update(
        {
            "TB_BENCH_BROKER": args.broker,
            "TASKBRIDGE_ENGINE": args.engine,
            "TASKBRIDGE_BROKER_URL": args.broker,
            "TASKBRIDGE_NAMESPACE": f"benchbl{tag}",
            "TASKBRIDGE_DEFAULT_QUEUE": f"benchbl-{tag}",
            "TASKBRIDGE_PREFETCH": "1",
            "TASKBRIDGE_CELERY_LOGLEVEL": "WARNING",
            "BENCH_DRAMATIQ_RAW_QUEUE": f"benchbl-raw-{tag}",
        }
    )
    sys.path.insert(0, str(HERE))
    import taskbridge

    taskbridge.configure()
    sides = celery_sides(args.threads) if args.engine == "celery" else dramatiq_sides(args.threads)
    logs = Path(f"/tmp/bench-backlog-{tag}")
    logs.mkdir()
    print(
        f"{args.engine} on {args.broker}: backlogs {small:,} and {big:,}, drain timed over {window:,} jobs "
        f"after the first {skip:,}; {rounds} round(s); logs in {logs}",
        flush=True,
    )
    order = [("raw", small), ("taskbridge", small), ("taskbridge", big), ("raw", big)]
    results: dict[str, list[dict[str, float]]] = {f"{s}-{d}": [] for s, d in order}
    for index in range(rounds):
        for name, depth in order if index % 2 == 0 else order[::-1]:
            queue = f"benchbl-{name}-{depth}-{tag}-{index}"
            figures = drain(sides[name], queue, depth, skip, window, logs / f"{queue}.log", args.broker)
            results[f"{name}-{depth}"].append(figures)
            print(
                f"round {index} {name:>10} backlog {depth:>7,}: {figures['rate']:8,.0f} jobs/s, RSS "
                f"{figures['rss_start_mb']:.1f} -> {figures['rss_end_mb']:.1f} MB (max {figures['rss_max_mb']:.1f}), "
                f"CPU per job: worker {figures['worker_cpu_us']:.0f} us, broker {figures['broker_cpu_us']:.0f} us",
                flush=True,
            )
    summary: dict[str, Any] = {"engine": args.engine, "broker": args.broker, "small": small, "big": big}
    for name in ("raw", "taskbridge"):
        rates = [
            b["rate"] / s["rate"] for s, b in zip(results[f"{name}-{small}"], results[f"{name}-{big}"], strict=True)
        ]
        growth = [r["rss_end_mb"] - r["rss_start_mb"] for r in results[f"{name}-{big}"]]
        summary[f"{name}_small_rate"] = statistics.median(r["rate"] for r in results[f"{name}-{small}"])
        summary[f"{name}_big_rate"] = statistics.median(r["rate"] for r in results[f"{name}-{big}"])
        summary[f"{name}_big_vs_small"] = statistics.median(rates)
        summary[f"{name}_rss_growth_mb"] = statistics.median(growth)
        summary[f"{name}_rss_max_mb"] = max(r["rss_max_mb"] for r in results[f"{name}-{big}"])
        for part in ("worker", "broker"):
            for label, size in (("small", small), ("big", big)):
                cpu = statistics.median(r[f"{part}_cpu_us"] for r in results[f"{name}-{size}"])
                summary[f"{name}_{part}_cpu_us_{label}"] = cpu
    summary["tb_vs_raw_small"] = summary["taskbridge_small_rate"] / summary["raw_small_rate"]
    summary["tb_vs_raw_big"] = summary["taskbridge_big_rate"] / summary["raw_big_rate"]
    summary["rounds"] = results
    print(
        "| side | drain/s at small | drain/s at 10x | 10x / small | RSS growth over the 10x window MB | max RSS MB "
        "| worker CPU us/job at small, 10x | broker CPU us/job at small, 10x |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in ("raw", "taskbridge"):
        print(
            f"| {name} | {summary[f'{name}_small_rate']:,.0f} | {summary[f'{name}_big_rate']:,.0f} "
            f"| {summary[f'{name}_big_vs_small']:.3f} | {summary[f'{name}_rss_growth_mb']:+.1f} "
            f"| {summary[f'{name}_rss_max_mb']:.1f} "
            f"| {summary[f'{name}_worker_cpu_us_small']:.0f}, {summary[f'{name}_worker_cpu_us_big']:.0f} "
            f"| {summary[f'{name}_broker_cpu_us_small']:.0f}, {summary[f'{name}_broker_cpu_us_big']:.0f} |"
        )
    print(
        f"taskbridge/raw drain: {summary['tb_vs_raw_small']:.2f} at {small:,}, "
        f"{summary['tb_vs_raw_big']:.2f} at {big:,}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.broker.startswith("redis"):
        import redis

        client = redis.Redis.from_url(args.broker)
        for key in client.scan_iter(match=f"benchbl{tag}:*", count=10_000):
            client.delete(key)  # what the engines left: heartbeats, acknowledgement lists
    return 0


if __name__ == "__main__":
    sys.exit(main())
