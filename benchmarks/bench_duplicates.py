"""What the check against duplicate deliveries costs a worker, per message, in CPU and wall time.

    .venv/bin/python benchmarks/bench_duplicates.py --coordination redis://127.0.0.1:6379/1 --jobs 20000

Runs ``--jobs`` no-op messages through the core runner (no broker: the runner alone, so the
difference is the check) with the coordination store in Redis, as each transport's facts make it:

- ``plain``: a transport that never hands out a finished message again (Redis);
- ``marks``: RabbitMQ (``flags_lost_acks``): each message's finished mark gathered and written in
  batches by a thread; no message is looked up;
- ``claims``: SQS (``delivers_finished_again``): a claim before each message and a mark after it,
  two round trips of its own.

CPU is the whole process's (``time.process_time``: the marks' writing thread included). Rounds
alternate; each mode's best round is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import uuid

from taskbridge import job
from taskbridge.config import load_settings
from taskbridge.coordination.redis import RedisCoordination
from taskbridge.duplicates import FLUSH_EVERY
from taskbridge.envelope import Envelope
from taskbridge.memory import MemoryEngine
from taskbridge.runner import Runner


@job(name="bench.duplicates_noop")
def noop(n: int) -> None:
    """Does nothing."""


MODES = {"plain": {}, "marks": {"flags_lost_acks": True}, "claims": {"delivers_finished_again": True}}


def _round(mode: str, coordination_url: str, jobs: int) -> tuple[float, float]:
    settings = load_settings(engine="memory", broker_url="memory://?autostart=0", visibility_timeout=60)
    engine = MemoryEngine(settings)
    engine.facts = dataclasses.replace(engine.facts, **MODES[mode])
    coordination = RedisCoordination(coordination_url, f"benchdup-{uuid.uuid4().hex[:8]}")
    runner = Runner(engine, settings, coordination)
    bodies = [Envelope(job=noop.name, queue="bench", args=[n]).encode() for n in range(jobs)]
    cpu, wall = time.process_time(), time.perf_counter()
    for body in bodies:
        runner.run(body, "bench")
    if runner.finished_marks is not None:
        time.sleep(2 * FLUSH_EVERY)  # the last batch is written: its CPU is counted, its wait is not
        wall += 2 * FLUSH_EVERY
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    engine.close()
    coordination.close()
    return cpu / jobs * 1e6, wall / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordination", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    for index in range(args.rounds):
        order = list(MODES) if index % 2 == 0 else list(reversed(MODES))
        for mode in order:
            cpu, wall = _round(mode, args.coordination, args.jobs)
            best[mode] = min(best.get(mode, (cpu, wall)), (cpu, wall))
    print(f"{'mode':<8} {'CPU us/message':>15} {'wall us/message':>16}")
    for mode in MODES:
        cpu, wall = best[mode]
        print(f"{mode:<8} {cpu:>15.1f} {wall:>16.1f}")


if __name__ == "__main__":
    main()
