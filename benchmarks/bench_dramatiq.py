"""Raw Dramatiq against taskbridge on Dramatiq, on the same broker in one run.

For ``--jobs`` no-op jobs (default 20,000) it measures the enqueue rate (``actor.send()`` loop vs
``job.enqueue()`` loop), the drain rate of one worker process with 8 threads, and
``job.enqueue_many`` (the median of three calls) against the raw ``.send()`` loop; it prints jobs/s
and taskbridge/raw ratios::

    .venv/bin/python benchmarks/bench_dramatiq.py --broker redis://127.0.0.1:6379/0
    .venv/bin/python benchmarks/bench_dramatiq.py --broker amqp://guest:guest@127.0.0.1:5672//
    .venv/bin/python benchmarks/bench_dramatiq.py --broker sqs:// --jobs 2000   # moto at 127.0.0.1:4566
    .venv/bin/python benchmarks/bench_dramatiq.py --broker amqp://guest:guest@127.0.0.1:5672// --jobs 2000 --signing

``--signing`` also measures the taskbridge side with ``TASKBRIDGE_SIGNING_KEY`` set on producer and worker.

Workers log at WARNING (taskbridge's runner logs each outcome at INFO, raw Dramatiq logs nothing per
message). This file is also the job module both workers import.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq
from measure import group_cpu, median_timed_cpu, rate, signing, signing_cost, timed

from taskbridge import job
from taskbridge.engine import delete_queue

HERE = Path(__file__).resolve().parent
RAW_QUEUE_ENV = "BENCH_DRAMATIQ_RAW_QUEUE"


@job(name="bench.noop")
def noop() -> None:
    """The taskbridge job: does nothing."""


def _raw_noop() -> None:
    """The raw Dramatiq actor: does nothing."""


def setup_raw(confirm_delivery: bool = False) -> dramatiq.Actor[..., Any]:
    """Raw Dramatiq as its users write it: a broker with default middleware set as the global broker
    and an actor on it. The worker command calls this as ``bench_dramatiq:setup_raw``."""
    from taskbridge_dramatiq.brokers import pika_url

    from taskbridge.config import get_settings

    settings = get_settings()
    url = settings.broker_url
    broker: dramatiq.Broker
    if url.startswith("redis"):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace=settings.namespace)
    elif url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=pika_url(url), confirm_delivery=confirm_delivery)
    else:
        from dramatiq_sqs import SQSBroker

        broker = SQSBroker(
            namespace=settings.namespace,
            endpoint_url=settings.sqs_endpoint_url,
            region_name=settings.sqs_region,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
    dramatiq.set_broker(broker)
    return dramatiq.actor(_raw_noop, queue_name=os.environ[RAW_QUEUE_ENV], max_retries=0, broker=broker)


def _drain(command: list[str], queue: str, count: int, log: Path) -> tuple[float, float]:
    """Start a worker on a queue already holding ``count`` messages; seconds from its first to last
    fetch, and the worker's CPU seconds over that time."""
    from taskbridge import get_engine

    engine = get_engine()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        first = None
        cpu = 0.0
        while time.monotonic() < deadline:
            left = engine.depth(queue)
            now = time.perf_counter()
            if first is None and left < count:
                first, cpu = now, group_cpu(worker.pid)
            if left == 0 and first is not None:
                return now - first, group_cpu(worker.pid) - cpu
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see {log}")
            time.sleep(0.02)
        raise SystemExit(f"the queue did not drain in 10 minutes; see {log}")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def _purge(command: list[str], queue: str, total: int, log: Path) -> tuple[float, float]:
    """What ``--enqueue-only`` does instead of a drain: empty the queue."""
    from taskbridge import get_engine

    get_engine().purge(queue)
    return 0.0, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis://, amqp:// or sqs:// URL")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per measurement")
    parser.add_argument("--threads", type=int, default=8, help="threads of the one worker process")
    parser.add_argument("--signing", action="store_true", help="also measure taskbridge with signed envelopes")
    parser.add_argument(
        "--enqueue-only", action="store_true", help="measure the enqueue rates and enqueue_many only, no drains"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures (jobs/s) to this file")
    args = parser.parse_args()
    if args.enqueue_only and args.signing:
        parser.error("--signing measures drains too: not with --enqueue-only")

    run = uuid.uuid4().hex[:8]
    raw_queue, tb_queue = f"benchraw{run}", f"benchtb{run}"
    os.environ.update(
        {
            "TASKBRIDGE_ENGINE": "dramatiq",
            "TASKBRIDGE_BROKER_URL": args.broker,
            "TASKBRIDGE_NAMESPACE": f"bench{run}",
            "TASKBRIDGE_DEFAULT_QUEUE": tb_queue,
            RAW_QUEUE_ENV: raw_queue,
        }
    )
    os.environ.setdefault("TASKBRIDGE_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
    import taskbridge
    from taskbridge import get_engine

    taskbridge.configure()
    engine = get_engine()
    actor = setup_raw()
    n = args.jobs
    logs = Path(tempfile.mkdtemp(prefix="bench-dramatiq-"))
    rows: list[tuple[str, float, float | None]] = []
    print(f"broker={args.broker} jobs={n} worker: 1 process x {args.threads} threads; logs in {logs}", flush=True)

    raw_send = timed(lambda: [actor.send() for _ in range(n)])
    drain = _purge if args.enqueue_only else _drain
    raw_drain, raw_cpu = drain(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "bench_dramatiq:setup_raw",
            "--processes",
            "1",
            "--threads",
            str(args.threads),
            "--queues",
            raw_queue,
        ],
        raw_queue,
        n,
        logs / "raw-worker.log",
    )
    tb_send = timed(lambda: [noop.enqueue() for _ in range(n)])
    if args.signing:
        tb_drain = tb_cpu = 0.0  # measured below, alternating with the signed side
    else:
        tb_drain, tb_cpu = drain(
            [
                sys.executable,
                "-m",
                "taskbridge",
                "--log-level",
                "WARNING",
                "worker",
                "bench_dramatiq",
                "--queues",
                tb_queue,
                "--processes",
                "1",
                "--threads",
                str(args.threads),
            ],
            tb_queue,
            n,
            logs / "taskbridge-worker.log",
        )
    tb_many, tb_many_cpu = median_timed_cpu(
        lambda: noop.enqueue_many(() for _ in range(n)), lambda: engine.purge(tb_queue)
    )
    if args.signing:
        signed_queue = f"benchtbsig{run}"
        with signing(signed_queue):
            signed_send = timed(lambda: [noop.enqueue() for _ in range(n)])
            get_engine().purge(signed_queue)
        # Unsigned, signed, signed, unsigned: load that grows or falls during the run does not
        # favour one side. Each drain: (seconds, worker CPU seconds).
        drains: dict[str, list[tuple[float, float]]] = {"unsigned": [], "signed": []}
        for index, side in enumerate(["unsigned", "signed", "signed", "unsigned"]):
            queue = signed_queue if side == "signed" else tb_queue
            with signing(signed_queue) if side == "signed" else contextlib.nullcontext():
                noop.enqueue_many(() for _ in range(n))
                drains[side].append(
                    _drain(
                        [
                            sys.executable,
                            "-m",
                            "taskbridge",
                            "--log-level",
                            "WARNING",
                            "worker",
                            "bench_dramatiq",
                            "--queues",
                            queue,
                            "--processes",
                            "1",
                            "--threads",
                            str(args.threads),
                        ],
                        queue,
                        n,
                        logs / f"taskbridge-{side}-{index}-worker.log",
                    )
                )
    if args.signing:
        tb_drain = sum(seconds for seconds, _ in drains["unsigned"]) / 2
        tb_cpu = sum(cpu for _, cpu in drains["unsigned"]) / 2
        signed_drain = sum(seconds for seconds, _ in drains["signed"]) / 2
        signed_cpu = sum(cpu for _, cpu in drains["signed"]) / 2
    raw_send_rate, tb_send_rate = rate(n, raw_send), rate(n, tb_send)
    raw_drain_rate, tb_drain_rate = rate(n, raw_drain), rate(n, tb_drain)
    rows += [
        ("raw Dramatiq .send() loop", raw_send_rate, None),
        ("taskbridge .enqueue() loop", tb_send_rate, tb_send_rate / raw_send_rate),
        ("taskbridge .enqueue_many()", rate(n, tb_many), rate(n, tb_many) / raw_send_rate),
    ]
    if not args.enqueue_only:
        rows += [
            ("raw Dramatiq drain", raw_drain_rate, None),
            ("taskbridge drain", tb_drain_rate, tb_drain_rate / raw_drain_rate),
        ]
    if args.signing:
        rows += [
            ("taskbridge .enqueue() loop, signed", rate(n, signed_send), rate(n, signed_send) / raw_send_rate),
            ("taskbridge drain, signed", rate(n, signed_drain), rate(n, signed_drain) / raw_drain_rate),
        ]
    raw_confirmed_rate: float | None = None
    if args.broker.startswith("amqp"):
        # What publisher confirms cost: raw Dramatiq with them (taskbridge's default, at-least-once),
        # taskbridge without them.
        confirmed = setup_raw(confirm_delivery=True)
        raw_confirmed_rate = rate(n, timed(lambda: [confirmed.send() for _ in range(n)]))
        rows.append(
            (
                "raw Dramatiq .send(), confirm_delivery=True",
                raw_confirmed_rate,
                None,
            )
        )
        rows.append(("taskbridge .enqueue() vs raw with confirms", tb_send_rate, tb_send_rate / raw_confirmed_rate))
        os.environ["TASKBRIDGE_DRAMATIQ_CONFIRM_DELIVERY"] = "false"
        taskbridge.configure()
        rows.append(
            (
                "taskbridge .enqueue(), confirm_delivery=False",
                rate(n, timed(lambda: [noop.enqueue() for _ in range(n)])),
                None,
            )
        )
        rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][1] / raw_send_rate)
        delete_queue(get_engine(), tb_queue)
        delete_queue(get_engine(), raw_queue)

    if args.json is not None:
        figures = {
            "raw_enqueue": raw_send_rate,
            "tb_enqueue": tb_send_rate,
            "tb_many": rate(n, tb_many),
            "tb_many_cpu": tb_many_cpu / n,
        }
        if raw_confirmed_rate is not None:
            figures["raw_enqueue_confirmed"] = raw_confirmed_rate
        if not args.enqueue_only:
            figures |= {"raw_drain": raw_drain_rate, "tb_drain": tb_drain_rate}
            figures |= {"raw_cpu": raw_cpu / n, "tb_cpu": tb_cpu / n}
        args.json.write_text(json.dumps({"engine": "dramatiq", "broker": args.broker, "jobs": n, **figures}, indent=2))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'measurement':<{width}}  {'jobs/s':>10}  taskbridge/raw")
    for name, jobs_per_second, ratio in rows:
        print(f"{name:<{width}}  {jobs_per_second:>10,.0f}  {'' if ratio is None else f'{ratio:.2f}'}")
    print(f"enqueue_many CPU per job: {tb_many_cpu / n * 1e6:.1f} us")
    if not args.signing and not args.enqueue_only:
        print(f"worker CPU per job: raw {raw_cpu / n * 1e6:.0f} us, taskbridge {tb_cpu / n * 1e6:.0f} us")
    if args.signing:
        pairs = [unsigned[0] / signed[0] for unsigned, signed in zip(drains["unsigned"], drains["signed"], strict=True)]
        print(
            f"signed drain is {tb_drain / signed_drain:.3f} of the unsigned drain "
            f"(unsigned-signed pair {pairs[0]:.3f}, signed-unsigned pair {pairs[1]:.3f})"
        )
        print(
            f"worker CPU per job: raw {raw_cpu / n * 1e6:.0f} us, taskbridge {tb_cpu / n * 1e6:.0f} us, "
            f"signed {signed_cpu / n * 1e6:.0f} us ({signed_cpu / tb_cpu:.3f} of unsigned)"
        )
        print(signing_cost(tb_drain_rate))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
