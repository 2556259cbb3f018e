"""``taskbridge move`` of a backlog of no-op jobs: jobs/s and the move process's peak RSS, next to the
transport's raw ceiling measured in the same run.

    .venv/bin/python benchmarks/bench_move.py                  # 100,000 jobs per scenario
    .venv/bin/python benchmarks/bench_move.py --count 10000    # a quick run

Scenarios: Redis -> RabbitMQ under one engine (Celery, then Dramatiq), and Celery -> Dramatiq on
RabbitMQ. Each backlog is written at the source first (not timed), then ``taskbridge move`` runs as
a subprocess: its wall time gives jobs/s (start-up included), the time it reports for the queue
gives "moving" jobs/s, and ``wait4`` its CPU time per job (which a loaded machine disturbs far
less than wall time) and peak RSS. The target is checked to hold
every job, then both sides are emptied. Ceilings: pipelined ``LPUSH`` of the same number of
envelope-sized bodies (the source side's write), and ``basic_publish`` of them on one pika channel
unconfirmed, confirmed one by one, and in one transaction per batch (what a confirmed move pays).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_ceiling import amqp_ceiling, redis_ceiling
from measure import rate, timed

from taskbridge import Envelope
from taskbridge.config import Settings, load_settings
from taskbridge.dispatch import schedule
from taskbridge.engine import Engine, delete_queue, load_engine_factory

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
SCENARIOS = [
    ("redis->amqp, celery", "celery", REDIS, "celery", AMQP),
    ("redis->amqp, dramatiq", "dramatiq", REDIS, "dramatiq", AMQP),
    ("celery->dramatiq, amqp", "celery", AMQP, "dramatiq", AMQP),
]
FILL_BATCH = 1000


def _engine(name: str, url: str, namespace: str) -> tuple[Engine, Settings]:
    settings = load_settings(engine=name, broker_url=url, namespace=namespace)
    return load_engine_factory(name)(settings), settings


def _fill(engine: Engine, settings: Settings, queue: str, count: int) -> None:
    for start in range(0, count, FILL_BATCH):
        stop = min(count, start + FILL_BATCH)
        batch = [Envelope(job="bench.noop", queue=queue, args=[n]) for n in range(start, stop)]
        schedule(engine, batch, 0, settings)


def _move(args: list[str], env: dict[str, str]) -> tuple[float, float, float, list[dict[str, Any]], str]:
    """Run ``taskbridge move``; wall seconds, CPU seconds and peak RSS in MiB (``wait4``), its JSON
    report, stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "taskbridge", "move", "--json", *args], stdout=out, stderr=err, env=env
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        report, errors = out.read(), err.read().decode(errors="replace")
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    if process.returncode != 0:
        return seconds, cpu, peak_mb, [], errors
    return seconds, cpu, peak_mb, json.loads(report), errors


def run_scenario(label: str, src: str, src_url: str, dst: str, dst_url: str, count: int, batch: int) -> dict[str, Any]:
    namespace = f"bench-move-{uuid.uuid4().hex[:8]}"
    queue = f"bm{uuid.uuid4().hex[:8]}"
    (source, source_settings), (target, _) = _engine(src, src_url, namespace), _engine(dst, dst_url, namespace)
    result: dict[str, Any] = {"scenario": label, "jobs": count}
    try:
        _fill(source, source_settings, queue, count)
        result["source_depth"] = source.depth(queue)
        env = {**os.environ, "TASKBRIDGE_NAMESPACE": namespace}
        seconds, cpu, peak, report, err = _move(
            [
                "--from-engine",
                src,
                "--from-broker",
                src_url,
                "--to-engine",
                dst,
                "--to-broker",
                dst_url,
                "--queues",
                queue,
                "--batch",
                str(batch),
            ],
            env,
        )
        if not report:
            result["error"] = err.strip().splitlines()[-1] if err.strip() else "move failed"
            return result
        result.update(
            seconds=round(seconds, 2),
            jobs_per_s=round(rate(count, seconds)),
            peak_rss_mb=round(peak, 1),
            cpu_us_per_job=round(cpu / count * 1e6),
            moving_jobs_per_s=round(rate(count, report[0]["seconds"])),
            moved=report[0]["moved"],
            target_depth=target.depth(queue),
        )
        return result
    finally:
        for engine in (source, target):
            try:
                delete_queue(engine, queue)
            except Exception as exc:  # the queue may never have been declared on a failed run
                result.setdefault("cleanup", str(exc))
            engine.close()


def amqp_transaction_ceiling(url: str, count: int, batch: int) -> float:
    """``basic_publish`` of envelope-sized bodies on one pika channel, one transaction per batch."""
    import pika
    from taskbridge_dramatiq.brokers import pika_url

    connection = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
    channel = connection.channel()
    queue = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, durable=True)
    body = Envelope(job="bench.noop", queue="bench", args=[count]).encode().encode()
    persistent = pika.BasicProperties(delivery_mode=2)
    channel.tx_select()

    def publish() -> None:
        for start in range(0, count, batch):
            for _ in range(min(batch, count - start)):
                channel.basic_publish("", queue, body, persistent)
            channel.tx_commit()

    try:
        return rate(count, timed(publish))
    finally:
        channel.queue_delete(queue)
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="jobs in each backlog")
    parser.add_argument("--batch", type=int, default=500, help="move's --batch")
    parser.add_argument(
        "--ceiling-count", type=int, default=None, help="bodies for the ceilings (default: --count, at most 20,000)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    ceiling_n = args.ceiling_count or min(args.count, 20_000)

    rows = [run_scenario(*scenario, args.count, args.batch) for scenario in SCENARIOS]
    ceilings = {"redis_lpush_pipelined": round(redis_ceiling(REDIS, ceiling_n)["ceiling_publish"])}
    amqp = amqp_ceiling(AMQP, min(ceiling_n, 5000))  # one round trip per confirm: a smaller sample
    ceilings["amqp_publish_unconfirmed"] = round(amqp["ceiling_publish"])
    ceilings["amqp_publish_confirmed_each"] = round(amqp["ceiling_publish_confirmed"])
    ceilings["amqp_publish_transaction_per_batch"] = round(amqp_transaction_ceiling(AMQP, ceiling_n, args.batch))

    header = f"{'scenario':<26}{'jobs':>9}{'seconds':>9}{'jobs/s':>9}{'moving':>9}{'CPU us/job':>11}{'peak RSS':>11}"
    print(header + "  note")
    for row in rows:
        if "error" in row:
            dashes = "".join(f"{'-':>9}" for _ in range(3))
            print(f"{row['scenario']:<26}{row['jobs']:>9}{dashes}{'-':>11}{'-':>11}  failed: {row['error'][:90]}")
            continue
        ok = "" if row["target_depth"] == row["jobs"] else f"target holds {row['target_depth']}"
        print(
            f"{row['scenario']:<26}{row['jobs']:>9}{row['seconds']:>9}{row['jobs_per_s']:>9}"
            f"{row['moving_jobs_per_s']:>9}{row['cpu_us_per_job']:>11}{row['peak_rss_mb']:>8} MB  {ok}"
        )
    print("raw ceilings in this run (bodies/s):")
    for name, value in ceilings.items():
        print(f"  {name:<38}{value:>9}")
    if args.json is not None:
        args.json.write_text(json.dumps({"scenarios": rows, "ceilings": ceilings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
