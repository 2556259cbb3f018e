"""Light-load latency, raw engine against taskbridge on the same broker in one run: enqueue to start.

    .venv/bin/python benchmarks/bench_latency.py --engine dramatiq --broker redis://127.0.0.1:6379/0
    .venv/bin/python benchmarks/bench_latency.py --engine celery --broker amqp://guest:guest@127.0.0.1:5672//

The sides (raw, taskbridge) each get a worker, all started at once and each warmed up with
``--warmup`` jobs; then ``--jobs`` jobs per side are sent paced at ``--rate`` per second per side,
the sides taking turns (one send every ``1 / (rate x sides)`` seconds), so a broker or machine that
speeds up or slows down during the run changes every side alike. Each job writes how long after
its enqueue it started (the sender's clock, passed as its argument); the figures are the p50 and
p99 of those delays in milliseconds. Both sides use the same delivery settings as
``bench_celery.py`` and ``bench_dramatiq.py`` (Celery: prefork concurrency 2, late acks, prefetch 1;
Dramatiq: one process, 8 threads). On RabbitMQ, raw Dramatiq is measured a second time (its own
queue and worker) publishing with confirms, as taskbridge does by default (raw Celery already runs
with taskbridge's transport options, confirms included). ``--taskbridge-first`` puts taskbridge
first in each turn (``run.py`` alternates it between rounds). ``--stages`` (Dramatiq on RabbitMQ)
also prints, per side, the median time from enqueue to the delivery reaching pika, a worker thread
and taskbridge's runner (``latency_stages/sitecustomize.py``), which shows where a gap between the
sides comes from.
This file is also the job module of every worker.
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

from measure import raw_celery_worker

from taskbridge import job
from taskbridge.engine import delete_queue

HERE = Path(__file__).resolve().parent
OUT_ENV = "BENCH_LATENCY_FILE"
QUEUE_ENV = "BENCH_LATENCY_RAW_QUEUE"
BROKER_ENV = "BENCH_LATENCY_BROKER"
STAGES_ENV = "BENCH_LATENCY_STAGES"
WARMUP = -1.0


def _started(sent: float) -> None:
    """Append this job's delay from enqueue to start (or ``warm`` for a warm-up job) to the side's file."""
    line = "warm\n" if sent == WARMUP else f"{time.time() - sent}\n"
    fd = os.open(os.environ[OUT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@job(name="bench.latency")
def started(sent: float) -> None:
    """taskbridge's job."""
    _started(sent)


def celery_app() -> Any:
    """Raw Celery as ``bench_celery.py`` configures it, on the broker taskbridge would use."""
    from celery import Celery
    from taskbridge_celery.broker import broker_for

    from taskbridge import load_settings

    app = Celery("bench_latency_raw", set_as_current=False)
    url = os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0")
    settings = load_settings(engine="celery", broker_url=url)
    broker = broker_for(settings, settings.celery)
    app.conf.update(
        broker_url=broker.url,
        broker_transport_options=broker.transport_options,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_disable_rate_limits=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=os.environ.get(QUEUE_ENV, "bench-latency"),
    )
    app.task(name="bench.raw_latency")(_started)
    return app


raw_app = celery_app() if os.environ.get("TASKBRIDGE_ENGINE") == "celery" else None


def setup_raw_dramatiq(confirm_delivery: bool = False) -> Any:
    """Raw Dramatiq with its default middleware as the global broker, and the actor; the raw worker
    command calls this as ``bench_latency:setup_raw_dramatiq``. ``confirm_delivery``: on RabbitMQ,
    publish with confirms, as taskbridge does by default (Dramatiq's default is without)."""
    import dramatiq

    url = os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0")
    broker: dramatiq.Broker
    if url.startswith("redis"):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace=os.environ["TASKBRIDGE_NAMESPACE"])
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from taskbridge_dramatiq.brokers import pika_url

        broker = RabbitmqBroker(url=pika_url(url), confirm_delivery=confirm_delivery)
    dramatiq.set_broker(broker)
    return dramatiq.Actor(
        _started,
        broker=broker,
        actor_name="bench.raw_latency",
        queue_name=os.environ[QUEUE_ENV],
        priority=0,
        options={"max_retries": 0},
    )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _wait_for(path: Path, count: int, worker: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_lines(path)) < count:
        if worker.poll() is not None:
            raise SystemExit(f"the {what} worker exited with {worker.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the {what} worker ran {len(_lines(path))} of {count} jobs in {timeout:g}s")
        time.sleep(0.05)


def _paced(send: Callable[[float], object], count: int, per_second: float, warmup: bool = False) -> None:
    """``count`` sends, each at its own slot of a fixed schedule (a late send does not shift the rest)."""
    start = time.perf_counter()
    for index in range(count):
        pause = start + index / per_second - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        send(WARMUP if warmup else time.time())


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


def _in_turns(senders: list[Callable[[float], object]], count: int, per_second: float) -> None:
    """``count`` sends per sender, the senders taking turns, each at ``per_second``."""
    start, turns = time.perf_counter(), len(senders)
    for index in range(count * turns):
        pause = start + index / (per_second * turns) - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        senders[index % turns](time.time())


def _figures(path: Path) -> dict[str, float]:
    """p50 and p99 of a side's delays, in milliseconds."""
    delays = sorted(float(line) * 1000 for line in _lines(path) if line != "warm")
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    return {"p50": statistics.median(delays), "p99": cuts[98]}


Side = tuple[str, list[str], dict[str, str], Callable[[], Callable[[float], object]]]
"""What is measured, its worker command and environment, and how to get its sender."""


def _measure(sides: list[Side], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Start every side's worker, warm each up, send the paced jobs in turns; each side's figures."""
    workers = {what: _start(command, env) for what, command, env, _ in sides}
    try:
        senders = []
        for what, _, env, sender in sides:
            send = sender()
            _paced(send, args.warmup, args.rate, warmup=True)
            _wait_for(Path(env[OUT_ENV]), args.warmup, workers[what], what)
            senders.append(send)
        _in_turns(senders, args.jobs, args.rate)
        for what, _, env, _ in sides:
            _wait_for(Path(env[OUT_ENV]), args.warmup + args.jobs, workers[what], what)
    finally:
        for worker in workers.values():
            _stop(worker)
    return {what: _figures(Path(env[OUT_ENV])) for what, _, env, _ in sides}


def _print_stages(path: Path, sides: list[str]) -> None:
    """Median milliseconds from enqueue to each stage, per side (the job's start is its p50 above)."""
    stamps: dict[tuple[str, str], list[float]] = {}
    for line in _lines(path):
        side, stage, delay = line.split()
        stamps.setdefault((side, stage), []).append(float(delay) * 1000)
    files = {"raw": "raw", "raw with confirms": "raw-confirmed", "taskbridge": "taskbridge"}
    print("median ms from enqueue to: arrived at pika / a worker thread's process_message / Runner.run")
    for what in sides:
        cells = [stamps.get((files[what], stage)) for stage in ("arrived", "dequeued", "runner")]
        print(f"{what:<18} " + " / ".join(f"{statistics.median(c):.3f}" if c else "-" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("celery", "dramatiq"), default="dramatiq")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis:// or amqp:// URL")
    parser.add_argument("--jobs", type=int, default=1_000, help="jobs measured per side")
    parser.add_argument("--rate", type=float, default=100.0, help="jobs sent per second")
    parser.add_argument("--warmup", type=int, default=50, help="jobs sent and run before measuring")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures (ms) to this file")
    parser.add_argument(
        "--taskbridge-first", action="store_true", help="measure taskbridge before the raw engine (run.py alternates)"
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="Dramatiq on RabbitMQ: also print when messages reach pika, a worker thread and the runner",
    )
    args = parser.parse_args()
    if args.stages and not (args.engine == "dramatiq" and args.broker.startswith("amqp")):
        parser.error("--stages is for --engine dramatiq on an amqp:// broker")

    run = uuid.uuid4().hex[:8]
    raw_queue, tb_queue = f"benchlatraw{run}", f"benchlattb{run}"
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-latency-{run}"
    workdir.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "TASKBRIDGE_ENGINE": args.engine,
        "TASKBRIDGE_BROKER_URL": args.broker,
        "TASKBRIDGE_NAMESPACE": f"benchlat{run}",
        "TASKBRIDGE_DEFAULT_QUEUE": tb_queue,
        "TASKBRIDGE_PREFETCH": "1",
        "TASKBRIDGE_CELERY_LOGLEVEL": "WARNING",
        BROKER_ENV: args.broker,
        QUEUE_ENV: raw_queue,
    }
    if args.stages:
        # Workers load latency_stages/sitecustomize.py, which stamps each stage (see its docstring).
        env["PYTHONPATH"] = os.pathsep.join([str(HERE / "latency_stages"), env["PYTHONPATH"]])
        env[STAGES_ENV] = str(workdir / "stages.txt")
    os.environ.update(env)
    import taskbridge
    from taskbridge import get_engine

    taskbridge.configure()
    python = sys.executable
    raw_env = {**env, OUT_ENV: str(workdir / "raw.txt")}
    tb_env = {**env, OUT_ENV: str(workdir / "taskbridge.txt")}
    if args.engine == "celery":
        app = celery_app()
        task = app.tasks["bench.raw_latency"]
        raw_command = raw_celery_worker("bench_latency:raw_app", raw_queue, f"latency-{run}", ("-O", "fair"))
        raw_send: Callable[[float], object] = task.delay
        workers = ["--concurrency", "2"]
    else:
        actor = setup_raw_dramatiq()
        raw_command = [
            python,
            "-m",
            "dramatiq",
            "bench_latency:setup_raw_dramatiq",
            "--processes",
            "1",
            "--threads",
            "8",
            "--queues",
            raw_queue,
        ]
        raw_send = actor.send
        workers = ["--processes", "1", "--threads", "8"]
    tb_command = [
        python,
        "-m",
        "taskbridge",
        "--log-level",
        "WARNING",
        "worker",
        "bench_latency",
        "--queues",
        tb_queue,
        *workers,
    ]
    print(
        f"{args.engine} on {args.broker}: {args.jobs} jobs at {args.rate:g}/s after {args.warmup} warm-up jobs",
        flush=True,
    )
    sides: list[Side] = [
        ("raw", raw_command, raw_env, lambda: raw_send),
        ("taskbridge", tb_command, tb_env, lambda: started.enqueue),
    ]
    queues = [raw_queue, tb_queue]
    if args.engine == "dramatiq" and args.broker.startswith("amqp"):
        # taskbridge publishes with confirms by default; raw Dramatiq does not unless asked.
        confirmed_queue = f"benchlatrawc{run}"
        queues.append(confirmed_queue)
        confirmed_env = {**env, OUT_ENV: str(workdir / "raw-confirmed.txt"), QUEUE_ENV: confirmed_queue}

        def confirmed_sender() -> Callable[[float], object]:
            os.environ[QUEUE_ENV] = confirmed_queue
            try:
                return setup_raw_dramatiq(True).send  # type: ignore[no-any-return]
            finally:
                os.environ[QUEUE_ENV] = raw_queue

        confirmed_command = [confirmed_queue if part == raw_queue else part for part in raw_command]
        sides.insert(1, ("raw with confirms", confirmed_command, confirmed_env, confirmed_sender))
    if args.taskbridge_first:
        sides.reverse()
    try:
        measured = _measure(sides, args)
    finally:
        engine = get_engine()
        for queue in queues:
            with contextlib.suppress(Exception):
                delete_queue(engine, queue)
        engine.close()
    raw, tb = measured["raw"], measured["taskbridge"]
    figures = {"raw_p50_ms": raw["p50"], "raw_p99_ms": raw["p99"], "tb_p50_ms": tb["p50"], "tb_p99_ms": tb["p99"]}
    if "raw with confirms" in measured:
        confirmed_figures = measured["raw with confirms"]
        figures["raw_confirmed_p50_ms"] = confirmed_figures["p50"]
        figures["raw_confirmed_p99_ms"] = confirmed_figures["p99"]
        print(
            f"raw, confirms p50 {confirmed_figures['p50']:7.2f} ms   p99 {confirmed_figures['p99']:7.2f} ms   "
            f"(taskbridge p50 {tb['p50'] / confirmed_figures['p50']:.2f}x)"
        )
    print(f"raw         p50 {raw['p50']:7.2f} ms   p99 {raw['p99']:7.2f} ms")
    print(f"taskbridge  p50 {tb['p50']:7.2f} ms   p99 {tb['p99']:7.2f} ms   (p50 {tb['p50'] / raw['p50']:.2f}x raw)")
    if args.stages:
        _print_stages(workdir / "stages.txt", [what for what, *_ in sides])
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"engine": args.engine, "broker": args.broker, "jobs": args.jobs, "rate": args.rate, **figures},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
