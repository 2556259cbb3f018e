"""The scheduler: the leader enqueues each periodic job's runs as they fall due.

Every scheduler keeps trying to take the leader lease; only the leader fires. Each run is decided
by moving the job's state in the coordination store by compare-and-set before it is enqueued, so a
run is fired at most once even if two schedulers ever believed they led, and a run whose enqueue
failed is tried again (its state is put back).

Missed runs. Every run is fired, in order, while it is at most ``grace`` seconds late, so a slow
pass or a failover (shorter than ``grace``) loses none. Runs later than that were missed (no
scheduler ran, or the store was unreachable): ``missed="skip"`` drops them, ``missed="catch_up_once"``
fires one run for all of them, carrying the latest missed time. A scheduler back after a day thus
fires at most one run per job for the whole downtime, then the runs of the last ``grace`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from ..coordination import Coordination
from ..errors import TaskbridgeError
from ..job import Job, registry
from . import state
from .firing import fire, iso
from .lease import Lease

log = logging.getLogger("taskbridge.scheduler")

LONGEST_SLEEP = 1.0
RUNS_PER_PASS = 100


def periodic_jobs(jobs: Iterable[Job[..., object]] | None = None) -> list[Job[..., object]]:
    """The jobs with a schedule among ``jobs`` (default: every job declared in this process)."""
    chosen = registry().values() if jobs is None else jobs
    periodic = {handle.name: handle for handle in chosen if handle.spec.periodic is not None}
    return [periodic[name] for name in sorted(periodic)]


class Scheduler:
    """Fires the runs of ``jobs`` while it holds the leader lease in ``coordination``.

    ``lease`` bounds the failover: when the leader dies, another scheduler fires within about that
    many seconds. ``grace`` is how late a run may be fired and still count as on time; keep it
    longer than ``lease`` so that a failover never makes a run count as missed.
    """

    def __init__(
        self,
        jobs: Iterable[Job[..., object]],
        coordination: Coordination,
        *,
        lease: float = 15.0,
        grace: float = 60.0,
    ) -> None:
        self.jobs = periodic_jobs(jobs)
        self.coordination = coordination
        self.grace = grace
        self.lease = Lease(coordination, lease)
        self._next_due: dict[str, float] = {}
        self._next_refresh = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        """Whether this scheduler holds the leader lease now."""
        return self.lease.held

    def run(self) -> None:
        """Fire runs until :meth:`stop`; gives the lease up on the way out."""
        log.info(
            "taskbridge scheduler: %d periodic job(s): %s",
            len(self.jobs),
            "; ".join(f"{h.name} {h.spec.periodic.schedule.describe()}" for h in self.jobs if h.spec.periodic),
        )
        try:
            while not self._stopping.is_set():
                try:
                    pause = self.step()
                except Exception:  # the scheduler must outlive any one failure; the next pass tries again
                    log.exception("scheduler: a pass failed")
                    pause = LONGEST_SLEEP
                self._stopping.wait(pause)
        finally:
            self._give_up()

    def step(self) -> float:
        """One pass: keep or take the lease, fire what is due; returns how long to sleep."""
        was_leading = self.lease.held
        if time.monotonic() >= self._next_refresh:
            try:
                leading = self.lease.refresh()
            except TaskbridgeError as exc:
                log.warning("scheduler: cannot reach the coordination store to hold the lease: %s", exc)
                leading = self.lease.held
            self._next_refresh = time.monotonic() + self.lease.ttl / (3 if leading else 5)
            if leading and not was_leading:
                log.info("scheduler: leading (lease %gs)", self.lease.ttl)
                self._next_due.clear()  # another leader may have fired meanwhile: read the states again
            elif was_leading and not leading:
                log.warning("scheduler: lost the lease; another scheduler leads")
        if not self.lease.held:
            return min(LONGEST_SLEEP, max(0.05, self._next_refresh - time.monotonic()))
        now = time.time()
        for handle in self.jobs:
            for _ in range(RUNS_PER_PASS):
                if now < self._next_due.get(handle.name, 0.0) or not self.lease.held:
                    break
                try:
                    self._next_due[handle.name] = self._decide(handle, now)
                except Exception:
                    log.exception("scheduler: job %s: could not decide its next run; trying again", handle.name)
                    self._next_due[handle.name] = now + LONGEST_SLEEP
        soonest = min(self._next_due.values(), default=now + LONGEST_SLEEP)
        wake = min(soonest - time.time(), self._next_refresh - time.monotonic(), LONGEST_SLEEP)
        return max(0.01, wake)

    def _decide(self, handle: Job[..., object], now: float) -> float:
        """Decide the next undecided run of ``handle`` if it is due by ``now`` (or, when runs were
        missed, all of those at once); returns when to look at the job again."""
        periodic = handle.spec.periodic
        assert periodic is not None
        schedule = periodic.schedule
        current = state.read(self.coordination, handle.name)
        if current is None:  # a new job: its first run is the next one from now
            state.advance(self.coordination, handle.name, None, now)
            return schedule.next_after(now)
        run = schedule.next_after(state.moment(current))
        if run > now:
            return run
        missed = run < now - self.grace
        if missed:
            run = max(run, schedule.latest_until(now - self.grace))
        if not self.lease.held:
            return now
        moved = state.advance(self.coordination, handle.name, current, run)
        if moved is None:
            return now  # another scheduler decided it: read the state again
        if missed and periodic.missed == "skip":
            log.warning("scheduler: job %s: skipped the runs missed until %s (missed='skip')", handle.name, iso(run))
            return now
        try:
            envelope = fire(handle, run)
        except Exception:
            state.advance(self.coordination, handle.name, moved, state.moment(current))  # tried again next pass
            raise
        log.info(
            "scheduler: job %s: fired the run of %s%s%s",
            handle.name,
            iso(run),
            " (once, for the runs missed until then)" if missed else "",
            f" id={envelope.id}" if envelope is not None else " (a unique twin is still pending)",
        )
        return schedule.next_after(run)

    def start(self) -> None:
        """Run in a background thread (daemon), as ``taskbridge worker --with-scheduler`` and the
        embedded engine do; :meth:`stop` ends it."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self.run, name="taskbridge-scheduler", daemon=True)
        self._thread.start()

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`stop`; whether it was called."""
        return self._stopping.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop firing and give the lease up (at once when running in the foreground, on the
        thread's way out when started with :meth:`start`)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _give_up(self) -> None:
        try:
            self.lease.release()
        except TaskbridgeError as exc:
            log.warning("scheduler: could not give the lease up (it expires in %gs): %s", self.lease.ttl, exc)
