"""Raw Celery against taskbridge-on-Celery, on one broker, in one run.

    .venv/bin/python benchmarks/bench_celery.py --broker redis://127.0.0.1:6379/0 --jobs 20000
    .venv/bin/python benchmarks/bench_celery.py --broker redis://127.0.0.1:6379/0 --jobs 2000 --signing

Measures, for N no-op jobs: the enqueue rate (raw ``.delay()`` loop vs ``job.enqueue()`` loop),
``enqueue_many`` (the median of three calls) against the raw ``.delay()`` loop, and the drain rate
of one worker with prefork concurrency 2 on a pre-filled queue. Both sides use the same delivery settings (late acks,
prefetch multiplier 1, JSON, no result backend, no rate limits) and log at WARNING, so the ratio
shows what taskbridge itself costs. A third drain runs raw Celery on its own delivery defaults
(early acks, prefetch multiplier 4): the price of at-least-once delivery, which taskbridge keeps
on. Each run uses fresh queue names. ``--signing`` also measures
the taskbridge side with ``TASKBRIDGE_SIGNING_KEY`` set on producer and worker.
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

from celery import Celery
from measure import (
    SIGNING_KEY,
    group_cpu,
    median_timed_cpu,
    rate,
    raw_celery_worker,
    signing,
    signing_cost,
    timed,
)
from taskbridge_celery.broker import broker_for

import taskbridge
from taskbridge import get_engine, job, load_settings
from taskbridge.engine import delete_queue

HERE = Path(__file__).resolve().parent
BROKER_ENV = "TB_BENCH_BROKER"

_COMMON = {
    "task_serializer": "json",
    "accept_content": ["json"],
    "result_backend": None,
    "task_ignore_result": True,
    "worker_disable_rate_limits": True,
    "worker_send_task_events": False,
    "task_send_sent_event": False,
    "broker_connection_retry_on_startup": True,
}
raw_app = Celery("bench_raw", set_as_current=False)
# taskbridge's delivery settings: acknowledged after the run, requeued if the child dies, prefetch 1.
raw_app.conf.update(_COMMON, task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1)
raw_default_app = Celery("bench_raw_defaults", set_as_current=False)
# Celery's own delivery defaults (task_acks_late=False, worker_prefetch_multiplier=4): a job is
# acknowledged before it runs, so a worker that dies loses it.
raw_default_app.conf.update(_COMMON)


def _use_broker(url: str) -> None:
    """Point raw Celery at ``url`` with the transport options taskbridge uses (for SQS: the endpoint,
    region and polling; elsewhere the visibility timeout), so both sides talk to the same broker."""
    settings = load_settings(engine="celery", broker_url=url)
    broker = broker_for(settings, settings.celery)
    for app in (raw_app, raw_default_app):
        app.conf.broker_url = broker.url
        app.conf.broker_transport_options = broker.transport_options


_use_broker(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))


@raw_app.task(name="bench.raw_noop")
def raw_noop(n: int) -> None:
    """Raw Celery's no-op."""


@raw_default_app.task(name="bench.raw_noop")
def raw_default_noop(n: int) -> None:
    """Raw Celery's no-op, on Celery's delivery defaults."""


@job(name="bench.noop")
def noop(n: int) -> None:
    """taskbridge's no-op."""


def _drain(command: list[str], env: dict[str, str], depth: Callable[[], int], total: int) -> tuple[float, float]:
    """Start a worker on a full queue; jobs/s from its first message taken until the queue is empty,
    and the worker's CPU seconds per job over that time."""
    worker = subprocess.Popen(
        command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while (left := depth()) >= total:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited: {worker.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never took a message")
            time.sleep(0.01)
        started, first, cpu = time.perf_counter(), left, group_cpu(worker.pid)
        while (left := depth()) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue not drained: {left} left")
            time.sleep(0.05)
        return rate(first, time.perf_counter() - started), (group_cpu(worker.pid) - cpu) / first
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def _one_round(
    n: int, tag: str, env: dict[str, str], signed: bool, signed_first: bool, drains: bool = True
) -> dict[str, float]:
    engine = get_engine()
    raw_queue, tb_queue, many_queue = f"bench-raw-{tag}", f"bench-tb-{tag}", f"bench-many-{tag}"
    raw_app.conf.task_default_queue = raw_queue
    os.environ["TASKBRIDGE_DEFAULT_QUEUE"] = env["TASKBRIDGE_DEFAULT_QUEUE"] = tb_queue
    taskbridge.configure()
    engine = get_engine()
    raw_noop.delay(-1)  # connect and declare before timing
    noop.enqueue(-1)
    for queue in (raw_queue, tb_queue):
        engine.purge(queue)
    result = {
        "raw_enqueue": rate(n, timed(lambda: [raw_noop.delay(i) for i in range(n)])),
        "tb_enqueue": rate(n, timed(lambda: [noop.enqueue(i) for i in range(n)])),
    }
    if raw_app.conf.broker_transport_options.get("confirm_publish"):
        # RabbitMQ: raw Celery runs with taskbridge's transport options, publisher confirms included.
        result["raw_enqueue_confirmed"] = result["raw_enqueue"]
    many, many_cpu = median_timed_cpu(
        lambda: noop.options(queue=many_queue).enqueue_many((i,) for i in range(n)), lambda: engine.purge(many_queue)
    )
    result["tb_many"], result["tb_many_cpu"] = rate(n, many), many_cpu / n
    delete_queue(engine, many_queue)
    if not drains:
        for queue in (raw_queue, tb_queue):
            delete_queue(engine, queue)
        return result
    result["raw_drain"], result["raw_cpu"] = _drain(
        raw_celery_worker("bench_celery:raw_app", raw_queue, f"raw-{tag}", ("-O", "fair")),
        env,
        lambda: engine.depth(raw_queue),
        n,
    )
    default_queue = f"bench-rawdef-{tag}"
    raw_default_app.conf.task_default_queue = default_queue
    for i in range(n):
        raw_default_noop.delay(i)
    result["raw_default_drain"], result["raw_default_cpu"] = _drain(
        raw_celery_worker("bench_celery:raw_default_app", default_queue, f"rawdef-{tag}"),
        env,
        lambda: engine.depth(default_queue),
        n,
    )
    python = sys.executable
    queues = {"tb": (tb_queue, env)}
    if signed:
        signed_queue = f"bench-tbsig-{tag}"
        with signing(signed_queue):
            result["tb_enqueue_signed"] = rate(n, timed(lambda: [noop.enqueue(i) for i in range(n)]))
        signed_env = {**env, "TASKBRIDGE_SIGNING_KEY": SIGNING_KEY, "TASKBRIDGE_DEFAULT_QUEUE": signed_queue}
        queues["tb_signed"] = (signed_queue, signed_env)
    # With signing, odd rounds drain the signed queue first, so load that grows or falls during a
    # run does not always favour the same side.
    for side in sorted(queues, reverse=signed_first):
        queue, side_env = queues[side]
        result[f"{side}_drain"], result[f"{side}_cpu"] = _drain(
            [
                python,
                "-m",
                "taskbridge",
                "--log-level",
                "WARNING",
                "worker",
                "bench_celery",
                "--queues",
                queue,
                "--concurrency",
                "2",
            ],
            side_env,
            lambda queue=queue: engine.depth(queue),
            n,
        )
    for queue in [raw_queue, default_queue] + [queue for queue, _ in queues.values()]:
        with contextlib.suppress(Exception):
            delete_queue(engine, queue)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis://, amqp:// or sqs:// URL")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, report each side's best round")
    parser.add_argument("--signing", action="store_true", help="also measure taskbridge with signed envelopes")
    parser.add_argument(
        "--enqueue-only", action="store_true", help="measure the enqueue rates and enqueue_many only, no drains"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures (jobs/s) to this file")
    args = parser.parse_args()
    if args.enqueue_only and args.signing:
        parser.error("--signing measures drains too: not with --enqueue-only")
    n = args.jobs
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        BROKER_ENV: args.broker,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "TASKBRIDGE_ENGINE": "celery",
        "TASKBRIDGE_BROKER_URL": args.broker,
        "TASKBRIDGE_NAMESPACE": f"bench{tag}",
        "TASKBRIDGE_DEFAULT_QUEUE": f"bench-tb-{tag}",
        "TASKBRIDGE_PREFETCH": "1",
        "TASKBRIDGE_CELERY_LOGLEVEL": "WARNING",
    }
    os.environ.update(env)
    _use_broker(args.broker)
    print(
        f"broker {args.broker}, {n} no-op jobs, one worker with prefork concurrency 2, best of {args.rounds} round(s)",
        flush=True,
    )
    rounds = [
        _one_round(n, f"{tag}-{i}", env, args.signing, i % 2 == 1, not args.enqueue_only) for i in range(args.rounds)
    ]
    best = {key: (min if "cpu" in key else max)(r[key] for r in rounds) for key in rounds[0]}
    print(
        f"enqueue       raw .delay() {best['raw_enqueue']:8.0f}/s   taskbridge .enqueue() "
        f"{best['tb_enqueue']:8.0f}/s   ratio {best['tb_enqueue'] / best['raw_enqueue']:.2f}"
    )
    print(
        f"enqueue_many  taskbridge   {best['tb_many']:8.0f}/s   vs the raw .delay() loop: "
        f"{best['tb_many'] / best['raw_enqueue']:.1f}x   CPU {best['tb_many_cpu'] * 1e6:.1f} us/job"
    )
    if not args.enqueue_only:
        print(
            f"drain         raw          {best['raw_drain']:8.0f}/s   taskbridge            "
            f"{best['tb_drain']:8.0f}/s   ratio {best['tb_drain'] / best['raw_drain']:.2f}"
        )
        print(
            f"drain         raw on Celery's defaults (early ack, prefetch 4) {best['raw_default_drain']:8.0f}/s   "
            f"ratio {best['tb_drain'] / best['raw_default_drain']:.2f}"
        )
        print(
            f"worker CPU    raw          {best['raw_cpu'] * 1e6:8.0f} us/job   taskbridge "
            f"{best['tb_cpu'] * 1e6:8.0f} us/job"
        )
    if args.signing:
        enqueue, drain = best["tb_enqueue_signed"], best["tb_signed_drain"]
        print(
            f"signed        enqueue {enqueue:8.0f}/s ({enqueue / best['tb_enqueue']:.3f} of unsigned)   "
            f"drain {drain:8.0f}/s   ratio {drain / best['raw_drain']:.2f} "
            f"({drain / best['tb_drain']:.3f} of unsigned)"
        )
        print(
            f"signed        worker CPU {best['tb_signed_cpu'] * 1e6:8.0f} us/job "
            f"({best['tb_signed_cpu'] / best['tb_cpu']:.3f} of unsigned)"
        )
        drains = sorted(r["tb_signed_drain"] / r["tb_drain"] for r in rounds)
        cpus = sorted(r["tb_signed_cpu"] / r["tb_cpu"] for r in rounds)
        print(
            f"signed/unsigned per round: drain {' '.join(f'{d:.3f}' for d in drains)} (median "
            f"{statistics.median(drains):.3f}), worker CPU {' '.join(f'{c:.3f}' for c in cpus)} "
            f"(median {statistics.median(cpus):.3f})"
        )
        print(signing_cost(best["tb_drain"]))
    if args.json is not None:
        args.json.write_text(json.dumps({"engine": "celery", "broker": args.broker, "jobs": n, **best}, indent=2))
    get_engine().close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
