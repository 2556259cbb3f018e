"""What job tracking costs: drain and enqueue rates with ``track_jobs`` off and on, in one run.

    .venv/bin/python benchmarks/bench_tracking.py --engine celery --broker redis://127.0.0.1:6379/0
    .venv/bin/python benchmarks/bench_tracking.py --engine dramatiq --broker amqp://guest:guest@127.0.0.1:5672//

For ``--jobs`` no-op jobs it fills a queue with tracking off, drains it with one worker, then does
the same with ``TASKBRIDGE_TRACK_JOBS=true`` in the producer and the worker (a record per job:
written at enqueue, start and finish). The records live in the coordination store, Redis
(``--coordination``), for both sides, so tracking is the only difference. Rounds alternate the
order; each side's best round is reported. This file is also the job module the workers import.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from measure import rate, timed

from taskbridge import job

HERE = Path(__file__).resolve().parent


@job(name="bench.tracked_noop")
def noop(n: int) -> None:
    """Does nothing."""


def _drain(command: list[str], env: dict[str, str], queue: str, total: int) -> float:
    """Start a worker on a full queue; jobs/s from its first message taken until the queue is empty."""
    from taskbridge import get_engine

    engine = get_engine()
    worker = subprocess.Popen(
        command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while (left := engine.depth(queue)) >= total:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited: {worker.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never took a message")
            time.sleep(0.01)
        started, first = time.perf_counter(), left
        while (left := engine.depth(queue)) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue not drained: {left} left")
            time.sleep(0.05)
        return rate(first, time.perf_counter() - started)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def _side(engine: str, n: int, tag: str, track: bool, base_env: dict[str, str]) -> dict[str, float]:
    import taskbridge
    from taskbridge import get_engine, get_job

    queue = f"bench-track-{tag}-{'on' if track else 'off'}"
    env = {**base_env, "TASKBRIDGE_DEFAULT_QUEUE": queue, "TASKBRIDGE_TRACK_JOBS": "true" if track else "false"}
    os.environ.update(env)
    taskbridge.configure()
    noop.enqueue(-1)  # connect and declare before timing
    get_engine().purge(queue)
    refs: list[object] = []
    enqueue = rate(n, timed(lambda: refs.extend(noop.enqueue(i) for i in range(n))))
    sizing = ["--concurrency", "2"] if engine == "celery" else ["--processes", "1", "--threads", "8"]
    command = [
        sys.executable,
        "-m",
        "taskbridge",
        "--log-level",
        "WARNING",
        "worker",
        "bench_tracking",
        "--queues",
        queue,
        *sizing,
    ]
    drain = _drain(command, env, queue, n)
    if track:
        # The first jobs ran long before the worker was stopped; their records must say so.
        early = [get_job(ref.id) for ref in refs[:100]]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while (states := {ref.status() for ref in early}) != {"done"}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tracking on, but the first jobs' records say {sorted(states)}")
            time.sleep(0.05)
    return {"enqueue": enqueue, "drain": drain}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("celery", "dramatiq"), default="celery")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis://, amqp:// or sqs:// URL")
    parser.add_argument("--coordination", default="redis://127.0.0.1:6379/1", help="where the records live")
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which side goes first")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    base_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "TASKBRIDGE_ENGINE": args.engine,
        "TASKBRIDGE_BROKER_URL": args.broker,
        "TASKBRIDGE_COORDINATION_URL": args.coordination,
        "TASKBRIDGE_NAMESPACE": f"bench{tag}",
        "TASKBRIDGE_PREFETCH": "1",
        "TASKBRIDGE_CELERY_LOGLEVEL": "WARNING",
    }
    print(
        f"{args.engine} on {args.broker}, records in {args.coordination}, {args.jobs} no-op jobs, "
        f"best of {args.rounds} round(s)",
        flush=True,
    )
    best: dict[bool, dict[str, float]] = {False: {}, True: {}}
    for index in range(args.rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        for track in order:
            measured = _side(args.engine, args.jobs, f"{tag}-{index}", track, base_env)
            print(
                f"  round {index + 1} tracking {'on ' if track else 'off'}: enqueue {measured['enqueue']:7.0f}/s"
                f"  drain {measured['drain']:7.0f}/s",
                flush=True,
            )
            for key, value in measured.items():
                best[track][key] = max(best[track].get(key, 0.0), value)
    for key in ("enqueue", "drain"):
        off, on = best[False][key], best[True][key]
        print(f"{key:8} tracking off {off:8.0f}/s   tracking on {on:8.0f}/s   ratio {on / off:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
