"""Rate limits at scale: held across worker processes at rates up to the drain capacity, and per key
with thousands of keys whose coordination records expire.

    .venv/bin/python benchmarks/bench_rate_limits.py                 # Dramatiq on Redis, 3 worker processes
    .venv/bin/python benchmarks/bench_rate_limits.py --quick
    .venv/bin/python benchmarks/bench_rate_limits.py --engine celery --keys 2000

First it measures the drain capacity of the workers with a job whose limit they cannot reach. Then, for each
rate (13/s, 200/s, half the capacity and the capacity itself), it queues ``rate x --seconds`` jobs
of a job declared with ``rate_limit=`` and records when each one started. It reports the achieved
rate against the limit and the most starts seen in any window of one period, ends included (the
limit's own count is the most it may hold). Last, a job with ``rate_key="{key}"`` runs ``--per-key`` times for
each of ``--keys`` distinct keys: every key must keep its own limit, and the ``<namespace>:rate:*``
records in Redis are counted during the run and until they have all expired.

The workers import this file; each job appends ``<time> <label>`` to a file of its process.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskbridge import job
from taskbridge.engine import delete_queue
from taskbridge.units import Rate, parse_rate

HERE = Path(__file__).resolve().parent
STAMPS_ENV = "BENCH_RATE_STAMPS"
LIMIT_ENV = "BENCH_RATE_LIMIT"
KEY_LIMIT_ENV = "BENCH_KEY_RATE_LIMIT"
_stamp_lock = threading.Lock()
_stamp_fd: int | None = None


def _stamp(label: object) -> None:
    global _stamp_fd
    line = f"{time.time():.6f} {label}\n".encode()
    with _stamp_lock:
        if _stamp_fd is None:
            path = Path(os.environ[STAMPS_ENV]) / f"{os.getpid()}.log"
            _stamp_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_stamp_fd, line)


@job(name="bench.unlimited")
def unlimited(n: int) -> None:
    """No limit: measures what the workers can drain."""
    _stamp(n)


@job(name="bench.limited", rate_limit=os.environ.get(LIMIT_ENV, "10/s"))
def limited(n: int) -> None:
    """Held to ``BENCH_RATE_LIMIT`` across every worker."""
    _stamp(n)


@job(name="bench.keyed", rate_limit=os.environ.get(KEY_LIMIT_ENV, "1/5s"), rate_key="{key}")
def keyed(key: str, n: int) -> None:
    """Held to ``BENCH_KEY_RATE_LIMIT`` per ``key``."""
    _stamp(key)


def read_stamps(folder: Path) -> list[tuple[float, str, str]]:
    """(time, label, worker pid) of every recorded start."""
    stamps = []
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            moment, _, label = line.partition(" ")
            stamps.append((float(moment), label, path.stem))
    return stamps


def busiest_window(times: list[float], period: float) -> int:
    """The most starts within any closed window ``[t, t + period]`` (``times`` sorted, as each job
    read ``time.time()`` when it started): the busiest window begins at a start."""
    return max((bisect.bisect_right(times, t + period) - i for i, t in enumerate(times)), default=0)


class Workers:
    """``count`` worker processes of this file on ``queue``, each with its own stamp folder env."""

    def __init__(self, engine: str, queue: str, count: int, env: dict[str, str], logs: Path) -> None:
        per_process = ["--processes", "1", "--threads", "8"] if engine == "dramatiq" else ["--concurrency", "4"]
        command = [sys.executable, "-m", "taskbridge", "--log-level", "WARNING", "worker", "bench_rate_limits"]
        self.processes = []
        for index in range(count):
            with open(logs / f"worker-{queue}-{index}.log", "wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        [*command, "--queues", queue, *per_process],
                        env=env,
                        cwd=HERE,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"a worker exited with {process.returncode}; see the worker logs")

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run = uuid.uuid4().hex[:8]
        self.namespace = f"benchrate{self.run}"
        self.logs = Path(tempfile.mkdtemp(prefix="bench-rate-"))
        os.environ.update(
            TASKBRIDGE_ENGINE=args.engine,
            TASKBRIDGE_BROKER_URL=args.broker,
            TASKBRIDGE_NAMESPACE=self.namespace,
            TASKBRIDGE_PREFETCH="1",
            TASKBRIDGE_CELERY_LOGLEVEL="WARNING",
        )
        import taskbridge

        taskbridge.configure()

    def clean(self) -> None:
        """Delete what the engines left under this run's namespace (heartbeats, acknowledgement lists)."""
        import redis

        client = redis.Redis.from_url(self.args.broker)
        for key in client.scan_iter(match=f"{self.namespace}:*", count=10_000):
            client.delete(key)

    @contextlib.contextmanager
    def workers(self, name: str, limit: str = "10/s", key_limit: str = "1/5s") -> Iterator[tuple[str, Path]]:
        """Workers on a fresh queue (warmed up: every process has run a job); yields (queue, stamps)."""
        from taskbridge import get_engine

        queue = f"benchrate-{name}-{self.run}"
        stamps = self.logs / name
        stamps.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            STAMPS_ENV: str(stamps),
            LIMIT_ENV: limit,
            KEY_LIMIT_ENV: key_limit,
            "TASKBRIDGE_DEFAULT_QUEUE": queue,
        }
        workers = Workers(self.args.engine, queue, self.args.processes, env, self.logs)
        try:
            warm = 60 * self.args.processes
            unlimited.options(queue=queue).enqueue_many((-1,) for _ in range(warm))
            deadline = time.monotonic() + 120
            while len(seen := read_stamps(stamps)) < warm or len({pid for _, _, pid in seen}) < len(workers.processes):
                workers.check()
                if time.monotonic() > deadline:
                    break  # a process that took nothing yet still counts; the run goes on
                if len(seen) >= warm:
                    unlimited.options(queue=queue).enqueue_many((-1,) for _ in range(warm))
                    warm += warm
                time.sleep(0.1)
            for path in stamps.glob("*.log"):
                path.write_text("")
            yield queue, stamps
            workers.check()
        finally:
            workers.stop()
            delete_queue(get_engine(), queue)

    def wait_for(self, stamps: Path, count: int, timeout: float) -> list[tuple[float, str, str]]:
        deadline = time.monotonic() + timeout
        while len(seen := read_stamps(stamps)) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(seen)} of {count} jobs ran in {timeout:.0f}s; logs in {self.logs}")
            time.sleep(0.2)
        return seen

    def capacity(self) -> float:
        """Jobs/s the workers drain (from the first start to the last) of a job whose limit they cannot
        reach: what the workers can do with the limit's own cost (a store round trip per job)."""
        n = self.args.capacity_jobs
        with self.workers("capacity", limit="1000000/s") as (queue, stamps):
            limited.options(queue=queue).enqueue_many((i,) for i in range(n))
            times = sorted(t for t, _, _ in self.wait_for(stamps, n, 600))
        return (n - 1) / (times[-1] - times[0])

    def limited(self, rate: Rate, capacity: float) -> dict[str, Any]:
        per_second = rate.count / rate.period
        n = max(int(rate.count) * 3, round(per_second * self.args.seconds))
        with self.workers(f"limited{per_second:.0f}", limit=f"{rate.count:g}/{rate.period:g}s") as (queue, stamps):
            limited.options(queue=queue).enqueue_many((i,) for i in range(n))
            seen = self.wait_for(stamps, n, 120 + 3 * n / per_second)
        times = sorted(t for t, _, _ in seen)
        achieved = (n - 1) / (times[-1] - times[0])
        busiest = busiest_window(times, rate.period)
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        return {
            "tightest_gap_vs_interval": gaps[0] / rate.interval,
            "gaps_under_half_interval": sum(1 for gap in gaps if gap < rate.interval / 2),
            "limit": per_second,
            "jobs": n,
            "achieved": achieved,
            "achieved_vs_limit": achieved / per_second,
            "busiest_window": busiest,
            "allowed_per_window": rate.count,
            "over": busiest > rate.count,
            "workers_bound": per_second > 0.5 * capacity,
            "processes": len({pid for _, _, pid in seen}),
        }

    def keyed(self) -> dict[str, Any]:
        import redis

        rate = parse_rate(self.args.key_limit)
        keys, per_key = self.args.keys, self.args.per_key
        n = keys * per_key
        client = redis.Redis.from_url(self.args.broker)
        pattern = f"{self.namespace}:rate:bench.keyed:*"

        def records() -> int:
            return sum(1 for _ in client.scan_iter(match=pattern, count=10_000))

        peak = 0
        with self.workers("keyed", key_limit=self.args.key_limit) as (queue, stamps):
            started = time.monotonic()
            # Round-robin over the keys, so each key's jobs are spread over the whole backlog.
            keyed.options(queue=queue).enqueue_many(
                {"key": f"k{k}", "n": round_} for round_ in range(per_key) for k in range(keys)
            )
            deadline = started + 600 + n / 50
            while len(read_stamps(stamps)) < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"keyed jobs did not all run; logs in {self.logs}")
                peak = max(peak, records())
                time.sleep(0.5)
            seen = read_stamps(stamps)
            drained = time.monotonic() - started
            last = max(t for t, _, _ in seen)
            left = records()
            expired_after = None
            expiry_deadline = time.monotonic() + rate.interval * 3 + 30
            while time.monotonic() < expiry_deadline:
                if records() == 0:
                    expired_after = time.time() - last
                    break
                time.sleep(0.2)
        by_key: dict[str, list[float]] = defaultdict(list)
        for moment, key, _ in seen:
            by_key[key].append(moment)
        busiest = max(busiest_window(sorted(times), rate.period) for times in by_key.values())
        gaps = [b - a for times in by_key.values() for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
        return {
            "keys": keys,
            "per_key": per_key,
            "jobs": n,
            "key_limit": str(rate),
            "drain_seconds": drained,
            "keys_seen": len(by_key),
            "busiest_key_window": busiest,
            "allowed_per_window": rate.count,
            "over": busiest > rate.count or len(by_key) != keys,
            "tightest_gap": min(gaps) if gaps else None,
            "interval": rate.interval,
            "rate_records_peak": peak,
            "rate_records_at_end": left,
            "rate_records_expired_after": expired_after,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="a redis:// URL (also the store)")
    parser.add_argument("--engine", choices=("dramatiq", "celery"), default="dramatiq")
    parser.add_argument("--processes", type=int, default=3, help="worker processes")
    parser.add_argument("--quick", action="store_true", help="short runs and 2,000 keys")
    parser.add_argument("--seconds", type=float, default=None, help="length of each limited run (default 10; 4 quick)")
    parser.add_argument("--capacity-jobs", type=int, default=None, help="jobs of the capacity run (20,000; 3,000)")
    parser.add_argument("--keys", type=int, default=None, help="distinct rate keys (default 10,000; 2,000 quick)")
    parser.add_argument("--per-key", type=int, default=3, help="jobs per key")
    parser.add_argument("--key-limit", default="1/5s", help="the limit of each key")
    parser.add_argument("--jobs", type=int, default=None, help="ignored (run.py passes it to every benchmark)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.capacity_jobs = args.capacity_jobs or (3_000 if args.quick else 20_000)
    args.keys = args.keys or (2_000 if args.quick else 10_000)
    if not args.broker.startswith("redis"):
        raise SystemExit("the rate-limit benchmark needs Redis: it is the coordination store")

    bench = Bench(args)
    print(f"{args.engine} on {args.broker}, {args.processes} worker processes; logs in {bench.logs}", flush=True)
    capacity = bench.capacity()
    print(f"drain capacity (a limit of 1,000,000/s): {capacity:,.0f} jobs/s", flush=True)
    rates = [Rate(13, 1.0), Rate(200, 1.0), Rate(max(1, round(capacity / 2)), 1.0), Rate(round(capacity), 1.0)]
    runs = []
    print(
        "| limit/s | jobs | achieved/s | achieved/limit | most starts in one period | gaps < interval/2 | processes |"
    )
    print("|---|---|---|---|---|---|---|")
    for rate in rates:
        result = bench.limited(rate, capacity)
        runs.append(result)
        verdict = "OVER" if result["over"] else "ok"
        bound = " (workers bound)" if result["workers_bound"] else ""
        print(
            f"| {result['limit']:,.0f} | {result['jobs']:,} | {result['achieved']:,.1f} | "
            f"{result['achieved_vs_limit']:.3f}{bound} | {result['busiest_window']} of {rate.count:g} {verdict} "
            f"| {result['gaps_under_half_interval']} | {result['processes']} |",
            flush=True,
        )
    keyed_result = bench.keyed()
    expired = keyed_result["rate_records_expired_after"]
    print(
        f"rate_key: {keyed_result['keys']:,} keys x {keyed_result['per_key']} jobs at {keyed_result['key_limit']} "
        f"per key, drained in {keyed_result['drain_seconds']:.1f}s; busiest key window "
        f"{keyed_result['busiest_key_window']} of {keyed_result['allowed_per_window']:g} "
        f"({'OVER' if keyed_result['over'] else 'ok'}), tightest gap {keyed_result['tightest_gap']:.3f}s "
        f"(interval {keyed_result['interval']:.3f}s); rate records: peak {keyed_result['rate_records_peak']:,}, "
        f"{keyed_result['rate_records_at_end']:,} at the last run, "
        + (f"all expired {expired:.1f}s after it" if expired is not None else "NOT all expired"),
        flush=True,
    )
    within = [r for r in runs if not r["workers_bound"]]
    figures = {
        "engine": args.engine,
        "broker": args.broker,
        "capacity": capacity,
        "runs": runs,
        "keyed": keyed_result,
        "never_over": not any(r["over"] for r in runs) and not keyed_result["over"],
        "within_3_percent": all(abs(r["achieved_vs_limit"] - 1) <= 0.03 for r in within),
        "keys_expire": expired is not None,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    bench.clean()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
