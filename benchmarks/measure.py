"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator


def raw_celery_worker(app: str, queue: str, name: str, options: tuple[str, ...] = ()) -> list[str]:
    """The command of a raw Celery worker (``app`` as ``module:attribute``) with prefork
    concurrency 2 on ``queue``, logging at WARNING, without the cluster chatter (gossip, mingle,
    heartbeats) that taskbridge's worker also leaves off."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        queue,
        "-c",
        "2",
        "-P",
        "prefork",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *options,
        "-n",
        f"{name}@%h",
    ]


def rate(count: int, seconds: float) -> float:
    """Jobs per second."""
    return count / seconds if seconds > 0 else float("inf")


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` took."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def timed_cpu(action: Callable[[], object]) -> tuple[float, float]:
    """Seconds ``action`` took, and the CPU seconds this process spent on it (user and system): on a
    loaded machine the CPU time is the steadier figure, the wall time also holds the waits for a CPU."""
    cpu = time.process_time()
    seconds = timed(action)
    return seconds, time.process_time() - cpu


def median_timed_cpu(
    action: Callable[[], object], between: Callable[[], object], repeats: int = 3
) -> tuple[float, float]:
    """:func:`timed_cpu` of ``action`` run ``repeats`` times, ``between()`` after each (say, a purge):
    the median seconds and the median CPU seconds. A 20,000-job batch publish takes about 0.1 s,
    where one stall of the machine moves a single timing by half."""
    runs = []
    for _ in range(repeats):
        runs.append(timed_cpu(action))
        between()
    return statistics.median(seconds for seconds, _ in runs), statistics.median(cpu for _, cpu in runs)


SIGNING_KEY = "bench-signing-key-0123456789"


@contextlib.contextmanager
def signing(queue: str) -> Iterator[None]:
    """This process enqueues to ``queue`` with envelopes signed with :data:`SIGNING_KEY`."""
    import taskbridge

    saved = {name: os.environ.get(name) for name in ("TASKBRIDGE_SIGNING_KEY", "TASKBRIDGE_DEFAULT_QUEUE")}
    os.environ.update(TASKBRIDGE_SIGNING_KEY=SIGNING_KEY, TASKBRIDGE_DEFAULT_QUEUE=queue)
    taskbridge.configure()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        taskbridge.configure()


def signing_cost(drain_rate: float, count: int = 5_000) -> str:
    """What signing and checking one envelope cost in this process, against the time per job at
    ``drain_rate`` jobs/s (the worker checks once per job; a no-op job republishes nothing)."""
    from taskbridge.envelope import Envelope, decode
    from taskbridge.signing import Signer

    signer = Signer(SIGNING_KEY)
    envelope = Envelope(job="bench.noop", queue="bench", args=[1], expires_at=time.time() + 86400)
    decoded = decode(signer.sign(envelope).encode())
    # The fastest of several passes: the cost itself, without what other load on the machine adds.
    sign = min(timed(lambda: [signer.sign(envelope) for _ in range(count)]) for _ in range(5)) / count
    verify = min(timed(lambda: [signer.verify(decoded) for _ in range(count)]) for _ in range(5)) / count
    per_job = 1 / drain_rate
    return (
        f"signing cost  sign {sign * 1e6:.1f} us, verify {verify * 1e6:.1f} us per envelope; verify is "
        f"{verify / per_job:.2%} of the {per_job * 1e6:.0f} us per job at {drain_rate:.0f} jobs/s"
    )


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _processes() -> Iterator[tuple[str, str, list[str]]]:
    """``(pid, command name, the stat fields after the name)`` of each live process (Linux /proc;
    nothing elsewhere). After the name, state is field 0, pgrp 2, utime 11 and stime 12 (proc(5))."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                name, rest = stat.read().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue
        yield entry, name, rest.split()


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``
    (Linux /proc; 0.0 elsewhere). Unlike wall time it barely moves with other load on the machine."""
    ticks = sum(int(f[11]) + int(f[12]) for _, _, f in _processes() if int(f[2]) == pgid)
    return ticks / _TICK


def broker_cpu(broker: str) -> float | None:
    """CPU seconds (user + system) the broker of URL ``broker`` has used so far, when it runs on this
    machine (a ``redis-server`` or RabbitMQ's ``beam.smp``; Linux /proc), else None."""
    wanted = "redis-server" if broker.startswith("redis") else "beam.smp"
    for _, name, fields in _processes():
        if name == wanted:
            return (int(fields[11]) + int(fields[12])) / _TICK
    return None


def group_rss(pgid: int) -> int:
    """Resident bytes of the live processes of process group ``pgid`` (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid, _, fields in _processes():
        if int(fields[2]) != pgid:
            continue
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total
