"""CPU per message of taskbridge's runner alone: decode, policies, the job, the outcome; no engine, no I/O.

    .venv/bin/python benchmarks/bench_runner.py
    .venv/bin/python benchmarks/bench_runner.py --profile     # and cProfile one round, by own time

Runs the envelope a producer writes for a no-op job through ``Runner.run`` (as every engine's worker
does once it has the message's JSON) on the embedded engine with its workers off, with the default
settings (default timeout, no tracking). It prints the CPU time per message (``time.process_time``),
best of ``--rounds`` rounds of ``--messages`` messages: the part of a worker's cost that is
taskbridge's own, whatever the engine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time

os.environ.setdefault("TASKBRIDGE_ENGINE", "memory")
os.environ.setdefault("TASKBRIDGE_BROKER_URL", "memory://?autostart=0")

# Imported after the environment above, which the settings read.
import taskbridge
from taskbridge import get_engine, job
from taskbridge.producer import Producer
from taskbridge.runner import Runner


@job(name="bench.runner_noop")
def noop(n: int) -> None:
    """Does nothing."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one round")
    args = parser.parse_args()
    taskbridge.configure()
    runner = Runner(get_engine())
    envelope = Producer(noop.spec).build((1,), {})
    assert envelope is not None
    text = envelope.encode()
    queue = envelope.queue
    count = args.messages

    def one_round() -> None:
        run, loads = runner.run, json.loads
        for _ in range(count):
            run(loads(text), queue)

    best = float("inf")
    for _ in range(args.rounds):
        started = time.process_time()
        one_round()
        best = min(best, time.process_time() - started)
    print(f"Runner.run, no-op job, JSON parse included: {best / count * 1e6:.2f} us of CPU per message")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(one_round)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
