"""CPU per message of the Dramatiq worker path in one thread, raw Dramatiq against taskbridge, no broker I/O.

A Dramatiq worker process does two things per message: its consumer thread reads the delivery
(raw Dramatiq: ``Message.decode``; taskbridge: the guarded ``read_item``) and queues it, and a worker
thread runs it (``WorkerThread.process_message``: the middleware, the actor, then the acknowledgement,
which this benchmark replaces with a no-op because it costs the same on both sides). On RabbitMQ the
consumer thread is the bottleneck of a drain and every thread shares the GIL, so these microseconds
are what taskbridge adds to a drain. The bodies are the bytes each side's producer writes::

    .venv/bin/python benchmarks/bench_worker_path.py                 # RabbitMQ broker classes
    .venv/bin/python benchmarks/bench_worker_path.py --broker redis://127.0.0.1:6379/0
    .venv/bin/python benchmarks/bench_worker_path.py --profile --sort cumulative   # and cProfile taskbridge's side

Nothing is sent: the brokers are built but never connect. CPU time of this process
(``time.process_time``), best of ``--rounds`` rounds of ``--messages`` messages.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from queue import PriorityQueue
from typing import Any

HERE = Path(__file__).resolve().parent


class _Taken(PriorityQueue[Any]):
    """The work queue a worker thread took the message from (``task_done`` only)."""

    def task_done(self) -> None:
        pass


class _NoAck:
    """Stands in for the consumer thread a worker thread hands a finished message to."""

    def post_process_message(self, message: Any) -> None:
        pass


def _best(rounds: int, count: int, action: Callable[[], None]) -> float:
    """Microseconds of CPU per message, best of ``rounds`` rounds (``action`` handles ``count``)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        action()
        best = min(best, time.process_time() - started)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//", help="amqp:// or redis:// URL")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement (the best counts)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of taskbridge's worker thread path")
    parser.add_argument("--sort", default="tottime", help="the profile's order: tottime, cumulative, ncalls")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    queue = f"benchpath{run}"
    os.environ.update(
        {
            "TASKBRIDGE_ENGINE": "dramatiq",
            "TASKBRIDGE_BROKER_URL": args.broker,
            "TASKBRIDGE_NAMESPACE": f"benchpath{run}",
            "TASKBRIDGE_DEFAULT_QUEUE": queue,
            "BENCH_DRAMATIQ_RAW_QUEUE": queue,
        }
    )
    sys.path.insert(0, str(HERE))
    import dramatiq
    from bench_dramatiq import noop, setup_raw
    from dramatiq.broker import MessageProxy
    from dramatiq.worker import WorkerThread
    from taskbridge_dramatiq.actors import to_message
    from taskbridge_dramatiq.brokers.guard import read_item
    from taskbridge_dramatiq.process import WorkerProcess

    import taskbridge
    from taskbridge import get_engine
    from taskbridge.worker import prepare

    taskbridge.configure()
    n = args.messages

    # Raw Dramatiq: the bytes actor.send() writes, decoded and run as its worker does.
    raw_actor = setup_raw()
    raw_broker = raw_actor.broker
    raw_body = raw_actor.message().encode()
    raw_thread = WorkerThread(broker=raw_broker, consumers={queue: _NoAck()}, work_queue=_Taken(), worker_timeout=1000)

    # taskbridge: the worker process's broker, middleware and actors, as `taskbridge worker` builds them.
    engine: Any = get_engine()
    prepare(engine)
    process = WorkerProcess(engine, [queue], 8)
    tb_broker: Any = engine.start_worker_broker(process.middleware, process._handle, [queue])
    bodies: list[bytes] = []
    engine.publish = lambda envelopes, delay=0: bodies.extend(to_message(e).encode() for e in envelopes)
    noop.enqueue()
    tb_body = bodies[0]
    tb_thread = WorkerThread(broker=tb_broker, consumers={queue: _NoAck()}, work_queue=_Taken(), worker_timeout=1000)

    def decoded(decode: Callable[[], Any]) -> Callable[[], None]:
        def action() -> None:
            for _ in range(n):
                decode()

        return action

    def per_message(thread: WorkerThread, message: Callable[[], Any]) -> float:
        """CPU us per message of ``process_message``, best of the rounds (the decoding not counted)."""
        best = float("inf")
        for _ in range(args.rounds):
            proxies = [MessageProxy(message()) for _ in range(n)]
            started = time.process_time()
            for proxy in proxies:
                thread.process_message(proxy)
            best = min(best, time.process_time() - started)
        return best / n * 1e6

    known = tb_broker.actors
    rows = [
        (
            "consumer: decode a delivery",
            _best(args.rounds, n, decoded(lambda: dramatiq.Message.decode(raw_body))),
            _best(args.rounds, n, decoded(lambda: read_item(tb_body, queue, known_actors=known))),
        ),
        (
            "worker thread: process_message",
            per_message(raw_thread, lambda: dramatiq.Message.decode(raw_body)),
            per_message(tb_thread, lambda: read_item(tb_body, queue, known_actors=known)),
        ),
    ]
    print(f"broker={args.broker} messages={n} best of {args.rounds}; CPU us per message, one thread")
    print(f"{'step':<34} {'raw':>7} {'taskbridge':>11} {'added':>7}")
    for name, raw, tb in rows:
        print(f"{name:<34} {raw:>7.1f} {tb:>11.1f} {tb - raw:>+7.1f}")
    raw_total, tb_total = sum(r for _, r, _ in rows), sum(t for _, _, t in rows)
    print(f"{'total':<34} {raw_total:>7.1f} {tb_total:>11.1f} {tb_total - raw_total:>+7.1f}")

    if args.profile:
        proxies = [MessageProxy(read_item(tb_body, queue, known_actors=known)) for _ in range(n)]
        profile = cProfile.Profile()
        profile.enable()
        for proxy in proxies:
            tb_thread.process_message(proxy)
        profile.disable()
        pstats.Stats(profile).sort_stats(args.sort).print_stats(40)


if __name__ == "__main__":
    # In a thread of its own, as Dramatiq's worker threads run jobs (the soft timeout works per thread there).
    thread = threading.Thread(target=main, name="bench-worker-path")
    thread.start()
    thread.join()
