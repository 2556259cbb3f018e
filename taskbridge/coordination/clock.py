"""Where a time of the Redis server's clock falls on this host's ``time.time()``.

Slots are times of the server's clock, and a worker learns them in a reply: it knows the server
read its clock somewhere between sending the request and receiving the reply, so a slot is only
known to within that round trip, which on a loaded host runs to tens of milliseconds. The offset
between the two clocks changes slowly, though: the tightest round trip seen lately bounds it far
better than a slow reply does. Written by hand: no maintained library keeps such an estimate for a
client of a Redis server (NTP does it between hosts, not for an application's replies).
"""

from __future__ import annotations

from dataclasses import dataclass

DRIFT = 0.001
"""Seconds the offset between two clocks may change per second (1,000 ppm: twice the fastest
slew NTP applies to a clock, for each of the two hosts); an old sample loses precision this fast."""


@dataclass(frozen=True, slots=True)
class _Sample:
    low: float  # the offset (server minus local) is at least this...
    high: float  # ...and at most this
    taken: float  # local time of the reply


class ServerClock:
    """The offset of a server's clock from this host's, kept from the replies of the tightest round
    trips (each widened by :data:`DRIFT` as it ages). Safe to share between threads: a sample lost
    to a race only makes the estimate a little less tight."""

    def __init__(self) -> None:
        self._best: _Sample | None = None

    def observe(self, server_now: float, sent: float, received: float) -> None:
        """A reply read the server's clock as ``server_now`` between ``sent`` and ``received`` (local)."""
        sample = _Sample(server_now - received, server_now - sent, received)
        best = self._best
        if best is None or _width(sample, received) <= _width(best, received):
            self._best = sample

    def local(self, server_time: float, now: float) -> tuple[float, float]:
        """The earliest and latest local times ``server_time`` may be at local time ``now``; at least
        as tight as the reply just observed (observe it first)."""
        best = self._best
        assert best is not None, "observe a reply first"
        spread = DRIFT * max(0.0, now - best.taken)
        return server_time - best.high - spread, server_time - best.low + spread


def _width(sample: _Sample, now: float) -> float:
    return sample.high - sample.low + 2 * DRIFT * max(0.0, now - sample.taken)
